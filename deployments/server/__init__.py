"""The local Prefect server and its processes.

- `local_server`: a long-lived local Prefect server for `jobcloud run --local` and the CLI.
- `processes`: real `prefect server start` / `prefect worker start` processes, and stopping them.

May import: `jobcloud.blocks`, `jobcloud.flows`, `jobcloud.deployments.worker`.
"""
