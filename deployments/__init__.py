"""Above the job flow: the worker, the server side, the HTTP API and the command line.

One room per concern, lowest layer first (each imports only `jobcloud.blocks`,
`jobcloud.flows` and the rooms before it; tests/unit/test_layers.py checks it):

- `worker/`: the JobCloud worker type and its fork server (warm starts).
- `server/`: the local Prefect server and real server/worker processes.
- `pools/`: work pools, their worker types, base job templates and resources, in-container checks.
- `imaging/`: building images, wrapping any image for in-container runs, the GPU probe.
- `notify/`: notifications, the zombie automation, the email block.
- `jobs/`: submitting jobs, reading and cancelling them, run-local, the Python API (`client`).
- `deploy/`: making deployments and pools match the catalog (`jobcloud deploy [--watch]`).
- `http_api/`: the HTTP API (`jobcloud api serve`).
- `cli/`: the `jobcloud` command.
"""
