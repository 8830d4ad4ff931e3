"""The server side: what JobCloud does with a Prefect server.

- `deploy`, `pools`, `automations`, `watch`: deployments and work pools that match the catalog.
- `submit`, `jobs`, `job_result`, `api`: submitting jobs, reading and cancelling them (the
  Python API is `api`).
- `run_local`: one job in this process against an embedded Prefect (`jobcloud run --local`).
- `local_server`, `processes`: the local Prefect server, and real server/worker processes.
- `images_build`: builds the images of images/ (shipped as `deployments.images`).

May import: `blocks`, `flows`, `deployments.worker`. Never `deployments.cli`: what prints
for a person lives there.
"""
