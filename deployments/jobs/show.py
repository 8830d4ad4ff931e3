"""Jobs on the Prefect server: list, show, logs, cancel, outputs.

A job is a flow run tagged `app:<application>`. Its status is the flow run's state; inside
Running, the phase is the task that runs: stage-inputs (preprocessing), run-container
(running), upload-outputs (postprocessing).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from jobcloud.blocks.errors import JobCloudError, MissingKeyError, UserError
from jobcloud.deployments.jobs.result import read_manifest, state_label
from jobcloud.flows.manifest import job_prefix
from jobcloud.flows.sweeper import sweep_here

# Prefect is imported inside the functions: never before `ensure_api` has fixed the API.

PHASES = {"stage-inputs": "preprocessing", "run-container": "running", "upload-outputs": "postprocessing"}
# DECODE's status words and Prefect's state names, both accepted by --state.
STATE_WORDS: dict[str, list[str]] = {
    "queued": ["SCHEDULED", "PENDING"],
    "scheduled": ["SCHEDULED"],
    "pending": ["PENDING"],
    "running": ["RUNNING"],
    "finished": ["COMPLETED"],
    "completed": ["COMPLETED"],
    "error": ["FAILED", "CRASHED"],
    "failed": ["FAILED"],
    "crashed": ["CRASHED"],
    "cancelled": ["CANCELLED", "CANCELLING"],
    "cancelling": ["CANCELLING"],
    "paused": ["PAUSED"],
}
LIST_LIMIT = 200


class UnknownJobError(UserError):
    """No flow run with that id."""


class JobInfo(BaseModel):
    """One job as `jobs ls` / `jobs show` report it."""

    id: str
    name: str
    application: str | None = None
    version: str | None = None
    entrypoint: str | None = None
    state: str
    phase: str | None = None
    message: str | None = None
    created: datetime | None = None
    started: datetime | None = None
    ended: datetime | None = None
    run_seconds: float | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    outputs: str
    manifest: dict[str, Any] | None = None
    array: dict[str, Any] | None = Field(None, description="A job array's elements and counts (`jobs/<id>/array.json`).")

    @property
    def ref(self) -> str:
        return f"{self.application}/{self.version}/{self.entrypoint}"


def _tag(run: Any, prefix: str) -> str | None:
    return next((t[len(prefix) :] for t in run.tags if t.startswith(prefix)), None)


def info_of(run: Any) -> JobInfo:
    """A flow run as a `JobInfo` (without phase or manifest)."""
    return JobInfo(
        id=str(run.id),
        name=run.name,
        application=_tag(run, "app:"),
        version=_tag(run, "version:"),
        entrypoint=_tag(run, "entrypoint:"),
        state=state_label(run.state) if run.state and run.state.is_final() else (run.state.name if run.state else "Unknown"),
        message=run.state.message if run.state else None,
        created=run.created,
        started=run.start_time,
        ended=run.end_time,
        run_seconds=run.total_run_time.total_seconds() if run.total_run_time else None,
        parameters=run.parameters,
        outputs=job_prefix(str(run.id)),
    )


def state_types(word: str) -> list[str]:
    """Prefect state types for a --state word (DECODE's or Prefect's, any case)."""
    types = STATE_WORDS.get(word.lower())
    if types is None:
        raise UserError(f"unknown state {word!r}; use one of {', '.join(STATE_WORDS)}")
    return types


def list_jobs(
    client: Any, app: str | None = None, state: str | None = None, limit: int = LIST_LIMIT, tags: list[str] | None = None
) -> list[JobInfo]:
    """Jobs, newest first, optionally of one application, in one state, and carrying all ``tags``
    (the HTTP API's `user:<name>`)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType, FlowRunFilterTags
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    wanted = [*([f"app:{app}"] if app else []), *(tags or [])]
    flt = FlowRunFilter(tags=FlowRunFilterTags(all_=wanted)) if wanted else FlowRunFilter()
    if state:
        flt.state = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(t) for t in state_types(state)]))
    runs = client.read_flow_runs(flow_run_filter=flt, sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit)
    return [info_of(r) for r in runs if _tag(r, "app:") is not None]


def read_run(client: Any, job_id: str) -> Any:
    """The flow run of ``job_id``; `UnknownJobError` for a malformed or unknown id."""
    return _run(client, job_id)


def _run(client: Any, job_id: str) -> Any:
    from prefect.exceptions import ObjectNotFound

    try:
        uid = UUID(job_id)
    except ValueError:
        raise UnknownJobError(f"{job_id!r} is not a job id (list them with `jobcloud jobs ls`)") from None
    try:
        return client.read_flow_run(uid)
    except ObjectNotFound:
        raise UnknownJobError(f"no job {job_id} on the Prefect server (list them with `jobcloud jobs ls`)") from None


def phase_of(client: Any, run: Any) -> str | None:
    """preprocessing / running / postprocessing while the flow runs; None otherwise."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    if not run.state or not run.state.is_running():
        return None
    tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    running = [t for t in tasks if t.state and t.state.is_running()]
    if not running:
        return None
    name = running[-1].name.rsplit("-", 1)[0]
    return PHASES.get(name, name)


def show_job(client: Any, job_id: str, store: Any) -> JobInfo:
    """Everything about one job: state, phase, timings, parameters, manifest."""
    return describe_run(client, _run(client, job_id), store)


def describe_run(client: Any, run: Any, store: Any) -> JobInfo:
    """`show_job` of a flow run already read."""
    info = info_of(run)
    info.phase = phase_of(client, run)
    array = (run.parameters or {}).get("array") or {}
    if array.get("elements"):
        info.array = array_record(store, array.get("id") or info.id, info)
    else:
        info.manifest = read_manifest(store, info.id)
    return info


def array_record(store: Any, array_id: str, info: JobInfo | None = None) -> dict[str, Any] | None:
    """Every element of array ``array_id`` so far (its runs' rows, merged), or None before
    any of its runs has ended."""
    from jobcloud.flows.array_manifest import merged_manifest
    from jobcloud.flows.catalog import EntrypointRef

    ref = EntrypointRef.parse(info.ref) if info is not None and info.application else None
    record = merged_manifest(store, array_id, ref, 0, running=info is not None and info.state in ("Running", "Pending", "Scheduled"))
    if not record.runs:
        return None
    return record.model_dump(mode="json")


def job_logs(client: Any, job_id: str, settle_s: float = 5.0) -> list[tuple[datetime, str, str]]:
    """(timestamp, level name, message) of every log line of the job, oldest first.

    A flow run's last log lines reach the server a moment after its final state does; for an
    ended job this waits up to ``settle_s`` seconds for the flow's "Finished in state" line.
    """
    run = _run(client, job_id)
    ended = run.state is not None and run.state.is_final()
    deadline = time.monotonic() + settle_s
    while True:
        logs = _all_logs(client, run.id)
        done = any(log.task_run_id is None and log.message.startswith("Finished in state") for log in logs)
        if not ended or done or time.monotonic() > deadline:
            return [(log.timestamp, logging.getLevelName(log.level), log.message) for log in logs]
        time.sleep(0.3)


def _all_logs(client: Any, run_id: UUID) -> list[Any]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    logs: list[Any] = []
    page = 200
    while True:
        batch = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
            limit=page,
            offset=len(logs),
            sort=LogSort.TIMESTAMP_ASC,
        )
        logs += batch
        if len(batch) < page:
            return logs


CANCEL_SETTLE_S = 10.0


def cancel_job(client: Any, job_id: str) -> str:
    """Cancel a job: a queued one at once, a running one through its worker (Cancelling)."""
    from prefect.states import Cancelled, Cancelling

    run = _run(client, job_id)
    if run.state and run.state.is_final():
        raise UserError(f"job {job_id} already ended ({run.state.name}); nothing to cancel")
    queued = run.state is not None and (run.state.is_scheduled() or run.state.is_pending())
    state = Cancelled(message="cancelled by jobcloud jobs cancel") if queued else Cancelling(message="cancelled by jobcloud jobs cancel")
    result = client.set_flow_run_state(run.id, state, force=True)
    if result.status.value != "ACCEPT":
        raise JobCloudError(f"the server did not accept cancelling job {job_id}: {result.details}")
    if queued:
        return state.name
    return _settle_cancel(client, run.id, job_id)


def _settle_cancel(client: Any, run_id: Any, job_id: str) -> str:
    """Wait for the run's process to end a Cancelling run; end it ourselves if none does.

    A worker or a local job stops within a few seconds (cancel_watch.py); a run still
    Cancelling after `CANCEL_SETTLE_S` has no process left to stop it (its host or worker is
    gone and so is its guard): it is marked Cancelled and this host's leftovers swept.
    """
    from prefect.states import Cancelled

    deadline = time.monotonic() + CANCEL_SETTLE_S
    while time.monotonic() < deadline:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run.state.name
        time.sleep(0.25)
    client.set_flow_run_state(
        run_id,
        Cancelled(message=f"no process stopped job {job_id} within {CANCEL_SETTLE_S:.0f} s of the cancel; marked Cancelled"),
        force=True,
    )
    try:
        sweep_here()
    except Exception:  # noqa: BLE001 - the worker's sweeper removes what is left later
        pass
    return "Cancelled"


def download_outputs(store: Any, job_id: str, dest: Path) -> list[Any]:
    """Copy everything under jobs/<id>/ into ``dest``: output/, log/, artifact/, manifest.json."""
    if not _is_uuid(job_id):
        raise UnknownJobError(f"{job_id!r} is not a job id (list them with `jobcloud jobs ls`)")
    try:
        entries = store.list(job_prefix(job_id))
    except MissingKeyError:
        raise UnknownJobError(f"job {job_id} has no files in the job store (yet?)") from None
    dest.mkdir(parents=True, exist_ok=True)
    records: list[Any] = []
    for entry in entries:
        records += store.download(entry.key, dest)
    return records


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True
