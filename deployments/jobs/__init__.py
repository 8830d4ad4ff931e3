"""Jobs on a Prefect server: submit, show, wait, cancel, outputs; one job in this process.

- `submit`: a job as a flow run of its deployment (`jobcloud run` without `--local`).
- `show`: list, show, logs, cancel, outputs of jobs.
- `result`: what a finished job reports (`JobResult`).
- `run_local`: one job in this process against a Prefect API (`jobcloud run --local`).
- `client`: the Python API (`from jobcloud import submit, wait, show, cancel, outputs`).

May import: `jobcloud.blocks`, `jobcloud.flows`, `jobcloud.deployments.worker`, `.server`,
`.pools`, `.imaging`, `.notify`.
"""
