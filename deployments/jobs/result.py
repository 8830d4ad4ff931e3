"""What a finished job reports, the same shape whether it ran here or on a worker:
id, final state, where its files are, its manifest (`jobcloud run --json`, the Python API)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jobcloud.blocks.errors import MissingKeyError
from jobcloud.blocks.keys import join_key
from jobcloud.blocks.store.job_store import JobStore
from jobcloud.flows.manifest import job_prefix


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
    try:
        return json.loads(store.read_bytes(join_key(job_prefix(job_id), "manifest.json")))
    except MissingKeyError:
        return None


def state_label(state: Any) -> str:
    """A final state's name as JobCloud reports it (Completed, Failed, Crashed, TimedOut...)."""
    if state is None:
        return "Unknown"
    return state.name if state.name == "TimedOut" else state.type.value.title()


def result_for(job_id: str, state: Any, store: JobStore) -> JobResult:
    """The `JobResult` of job ``job_id`` that ended in ``state``."""
    return JobResult(
        id=job_id,
        state=state_label(state),
        message=state.message if state else None,
        outputs=job_prefix(job_id),
        manifest=read_manifest(store, job_id),
    )
