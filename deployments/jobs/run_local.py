"""Run one job in this process against a Prefect API (`jobcloud run --local`)."""

from __future__ import annotations

import os

from jobcloud.blocks.engine import docker_client, require_gpus
from jobcloud.blocks.errors import JobCloudError
from jobcloud.blocks.settings import get_settings
from jobcloud.blocks.store.job_store import JobStore
from jobcloud.deployments.jobs.result import JobResult, result_for
from jobcloud.deployments.server.local_server import ensure_api
from jobcloud.flows.cancel_watch import WATCH_ENV
from jobcloud.flows.catalog import Entrypoint, EntrypointRef
from jobcloud.flows.container_run import ensure_image
from jobcloud.flows.container_spec import image_for, job_gpus
from jobcloud.flows.request import CheckedRequest, JobRequest

# Prefect and the flow are imported after `ensure_api` has fixed the API.


def check_engine(entry: Entrypoint, request: JobRequest) -> None:
    """Make sure the engine answers, can give the GPUs asked for, and has the image.

    Runs before any flow run exists, so a missing engine (`EngineUnavailableError`) or a GPU
    request it cannot honour (`GpuUnavailableError`) is bad input with nothing started
    (`jobcloud` exits 2), not a Failed job.
    """
    client = docker_client()
    try:
        gpus = job_gpus(entry, request)
        if gpus > 0:
            require_gpus(client, gpus)
        ensure_image(client, image_for(entry, gpus))
    finally:
        client.close()


def run_local(ref: EntrypointRef, entry: Entrypoint, request: CheckedRequest, store: JobStore) -> JobResult:
    """Run the entrypoint's flow here and wait for its final state (`check_engine` first,
    unless the command runs as a subprocess here: `JOBCLOUD_RUNNER=process`).

    ``request`` was checked (`check_request`); the flow runs it without checking it again."""
    if get_settings().runner == "engine":
        check_engine(entry, request)
    ensure_api()
    from prefect import tags
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from jobcloud.flows.job import make_flow

    flow = make_flow(ref, entry, lambda: store, checked=request)
    # Only what the job sets: the flow takes only the parameters its entrypoint has.
    params = request.model_dump(exclude_none=True, exclude_defaults=True)
    # No worker watches this run: the job polls its own state so `jobs cancel` reaches it.
    os.environ[WATCH_ENV] = "1"
    # Prefect's heartbeats (30 s at least) would only tell a server that this process died;
    # the job's guard (flows/job_guard.py) ends the run at once when it does. Stopping the
    # heartbeat thread also costs up to a second at exit.
    from prefect.exceptions import Abort

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}), tags(*ref.tags):
        try:
            state = flow(**params, return_state=True)
        except Abort as exc:  # the job stopped: its run ended on the server, or the server was out of reach
            raise JobCloudError(f"the job stopped without a result: {exc}") from None
    return result_for(str(state.state_details.flow_run_id), state, store)
