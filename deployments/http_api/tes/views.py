"""A task's answer, from its flow run (the stored document, the state) and its run log
(jobs/<id>/tes.json, written by the flow), in the view asked for.

MINIMAL: id and state. BASIC: everything but executors' stdout/stderr, inputs' content and
system_logs. FULL: everything.
"""

from __future__ import annotations

from typing import Any

from jobcloud.blocks.errors import JobCloudError, MissingKeyError
from jobcloud.blocks.store.job_store import JobStore
from jobcloud.deployments.http_api.tes.models import MinimalTask, TesState, TesTask, TesTaskLog, TesView
from jobcloud.deployments.http_api.tes.states import is_final
from jobcloud.flows.tes_plan import TesRunLog, run_log_key


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def read_run_log(store: JobStore, task_id: str) -> TesRunLog | None:
    """The flow's record of a task, if it wrote one (a task still queued or running has none)."""
    try:
        return TesRunLog.model_validate_json(store.read_bytes(run_log_key(task_id)))
    except (MissingKeyError, ValueError):
        return None


def task_log(run: Any, state: TesState, record: TesRunLog | None, full: bool) -> TesTaskLog | None:
    """The one TaskLog of a task (none before it started)."""
    if record is not None:
        return TesTaskLog(
            logs=[
                {
                    "start_time": e.start_time,
                    "end_time": e.end_time,
                    "exit_code": e.exit_code,
                    **({"stdout": e.stdout, "stderr": e.stderr} if full else {}),
                }
                for e in record.executors
            ],
            start_time=record.start_time,
            end_time=record.end_time,
            outputs=[o.model_dump() for o in record.outputs],
            system_logs=record.system_logs if full else None,
        )
    if run.start_time is None and not is_final(state):
        return None
    # Started, or ended without its record (a crash, a cancel before it ran): what Prefect says.
    message = run.state.message if run.state is not None else None
    return TesTaskLog(
        logs=[],
        outputs=[],
        start_time=_iso(run.start_time),
        end_time=_iso(run.end_time),
        system_logs=[message] if full and message and is_final(state) else None,
    )


def task_view(run: Any, state: TesState, view: TesView, store: JobStore) -> TesTask | MinimalTask:
    """The answer for ``run`` (a flow run of the TES deployment) in ``view``."""
    task_id = str(run.id)
    if view == TesView.MINIMAL:
        return MinimalTask(id=task_id, state=state)
    full = view == TesView.FULL
    doc = dict((run.parameters or {}).get("task") or {})
    if not full and doc.get("inputs"):
        doc["inputs"] = [{k: v for k, v in i.items() if k != "content"} for i in doc["inputs"]]
    record = None
    if is_final(state):
        try:
            record = read_run_log(store, task_id)
        except JobCloudError:
            record = None  # the store is away: the state still answers
    log = task_log(run, state, record, full)
    return TesTask.model_validate(
        {
            **doc,
            "id": task_id,
            "state": state,
            "creation_time": _iso(run.created),
            **({"logs": [log.model_dump(exclude_none=True)]} if log is not None else {}),
        }
    )
