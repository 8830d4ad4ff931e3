"""Above the job flow: the server side, the worker and the command line.

- `server/`: what talks to a Prefect server for JobCloud: deployments, work pools, job
  submission and queries, the Python API, the local server, the image builder.
- `worker/`: the JobCloud worker type and its fork server (warm starts).
- `cli/`: the `jobcloud` command.

Layers, each importing only those before it: blocks < flows < deployments.worker <
deployments.server < deployments.cli (tests/unit/test_layers.py checks it).
"""
