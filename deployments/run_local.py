"""Run one job in this process against a Prefect API (`jobcloud run --local`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blocks.job_store import JobStore
from flows.catalog import Entrypoint, EntrypointRef
from flows.errors import MissingKeyError
from flows.keys import join_key
from flows.manifest import job_prefix
from flows.request import JobRequest


@dataclass
class JobResult:
    """What a finished job reports: id, final state, where its files are, its manifest."""

    id: str
    state: str
    message: str | None
    outputs: str
    manifest: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        return self.state == "Completed"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "message": self.message,
            "outputs": self.outputs,
            "manifest": self.manifest,
        }


def read_manifest(store: JobStore, job_id: str) -> dict[str, Any] | None:
    """The manifest of a job, or None if it has none (yet)."""
    import json

    try:
        return json.loads(store.read_bytes(join_key(job_prefix(job_id), "manifest.json")))
    except MissingKeyError:
        return None


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
    job_id = str(state.state_details.flow_run_id)
    return JobResult(
        id=job_id,
        state=state.name if state.name in ("TimedOut",) else state.type.value.title(),
        message=state.message,
        outputs=job_prefix(job_id),
        manifest=read_manifest(store, job_id),
    )
