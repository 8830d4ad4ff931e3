"""The `jobcloud` command line (`main.main`; `python -m deployments.cli` runs it too).

- `main`: the typer app, `apps`, `check`, `server`, `sweep`, and `main()` with the exit codes.
- `run`, `jobs`, `files`, `deploy`, `images`, `pipelines`: one module per command group.
- `output`: JSON on stdout, messages on stderr, progress bars.

May import: everything below it (`blocks`, `flows`, `deployments.server`,
`deployments.worker`). Nothing imports the CLI.
"""
