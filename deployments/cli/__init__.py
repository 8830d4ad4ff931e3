"""The `jobcloud` command line (`main.main`; `python -m jobcloud.deployments.cli` runs it too).

- `main`: the typer app, `apps`, `check`, `server`, `sweep`, and `main()` with the exit codes.
- `run`, `jobs`, `files`, `deploy`, `images`, `pipelines`: one module per command group.
- `output`: JSON on stdout, messages on stderr, progress bars.

- `serve`: `jobcloud api serve|register` (the HTTP API's command group).

May import: everything below it (`jobcloud.blocks`, `jobcloud.flows`, every room of
`jobcloud.deployments`). Nothing imports the CLI.
"""
