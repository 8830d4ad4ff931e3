"""Run one job in this process against a Prefect API (`jobcloud run --local`)."""

from __future__ import annotations

from blocks.job_store import JobStore
from deployments.job_result import JobResult, result_for
from flows.catalog import Entrypoint, EntrypointRef
from flows.request import JobRequest


def run_local(ref: EntrypointRef, entry: Entrypoint, request: JobRequest, store: JobStore) -> JobResult:
    """Run the entrypoint's flow here and wait for its final state."""
    from deployments.local_server import ensure_api

    ensure_api()
    from prefect import tags
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.job import make_flow

    flow = make_flow(ref, entry, lambda: store)
    params = request.model_dump(exclude_none=True)
    # Heartbeats only help a server notice a lost worker; here the run lives and dies with this
    # command, and stopping the heartbeat thread costs up to a second at exit.
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}), tags(*ref.tags):
        state = flow(**params, return_state=True)
    return result_for(str(state.state_details.flow_run_id), state, store)
