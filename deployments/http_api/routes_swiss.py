"""The Swiss AI Center service contract, one service per entrypoint, under
`/swiss/{app}/{version}/{entrypoint}`: GET /status, POST /compute, GET /tasks/{task_id}/status.

A task is a JobCloud job: `data_in` are keys in the caller's folder (given to the job as
`data_ids`), progress goes to `callback_url` as the task updates the job already sends
(jobcloud.flows.callbacks), and the task's id is kept as the run tag `task:<task_id>`. `s3_infos` is
accepted for compatibility and not used: JobCloud reads and writes its own job store.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from jobcloud.deployments.http_api.auth import Principal, principal
from jobcloud.deployments.http_api.errors import ApiError
from jobcloud.deployments.http_api.routes_jobs import start_job
from jobcloud.deployments.http_api.services import Backend, owner_tag
from jobcloud.deployments.jobs.show import phase_of
from jobcloud.flows.catalog import EntrypointRef, load_catalog
from jobcloud.flows.request import HardwareOverride, JobRequest

router = APIRouter(prefix="/swiss/{app}/{version}/{entrypoint}", tags=["swiss-ai"])
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
# Prefect state / JobCloud phase -> the Swiss AI Center's task status words.
PHASE_WORDS = {"preprocessing": "fetching", "running": "processing", "postprocessing": "saving"}


class S3Infos(BaseModel):
    """The core engine's storage details (accepted, not used)."""

    model_config = ConfigDict(extra="allow")


class TaskParameters(BaseModel):
    """JobCloud's extension: the other job parameters of the entrypoint."""

    model_config = ConfigDict(extra="forbid")
    config_id: str | None = None
    artifact_ids: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    hardware: HardwareOverride | None = None
    timeout: int | None = Field(None, gt=0)


class TaskData(BaseModel):
    """What the core engine POSTs to /compute."""

    model_config = ConfigDict(extra="ignore")
    task_id: str = Field(pattern=TASK_ID_PATTERN, description="The core engine's task id.")
    data_in: list[str] = Field(default_factory=list, description="Keys of the inputs, in your folder.")
    callback_url: str | None = Field(None, description="Gets a PATCH with the task's status at each phase and at the end.")
    s3_infos: S3Infos | None = None
    parameters: TaskParameters = Field(default_factory=TaskParameters)


class TaskStatus(BaseModel):
    task_id: str
    job_id: str
    status: str
    state: str
    data_out: list[str] | None = None


def _ref(app: str, version: str, entrypoint: str) -> str:
    ref = EntrypointRef(application=app, version=version, entrypoint=entrypoint)
    try:
        load_catalog().get(ref)
    except Exception:  # noqa: BLE001 - any catalog miss is a 404 here
        raise ApiError(404, f"no entrypoint {ref}", "entrypoint", "list them with GET /applications") from None
    return str(ref)


def _task_tag(task_id: str) -> str:
    return f"task:{task_id}"


def _find_task(backend: Backend, user: str, task_id: str) -> Any:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    runs = backend.client.read_flow_runs(
        flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[owner_tag(user), _task_tag(task_id)])), limit=1
    )
    return runs[0] if runs else None


@router.get("/status")
def status(app: str, version: str, entrypoint: str) -> dict[str, str]:
    """Whether the service takes tasks (no token needed: the core engine polls it)."""
    _ref(app, version, entrypoint)
    return {"status": "available"}


@router.post("/compute", status_code=200)
def compute(
    request: Request, app: str, version: str, entrypoint: str, task: TaskData, who: Principal = Depends(principal)
) -> dict[str, str]:
    """Start the task as a job; its progress goes to `callback_url`."""
    ref = _ref(app, version, entrypoint)
    backend: Backend = request.app.state.backend
    if task.task_id and _find_task(backend, who.user, task.task_id) is not None:
        raise ApiError(409, f"task {task.task_id} exists already", "task_id", "use a new task id")
    p = task.parameters
    job = JobRequest(
        config_id=p.config_id,
        data_ids=task.data_in,
        artifact_ids=p.artifact_ids,
        env=p.env,
        hardware=p.hardware,
        timeout=p.timeout,
        callback_url=task.callback_url,
    )
    run = start_job(
        backend, who, who.user, ref, job, extra_tags=[_task_tag(task.task_id)], max_active=request.app.state.settings.max_active_jobs
    )
    return {"status": "Task added to the queue", "task_id": task.task_id, "job_id": str(run.id)}


@router.get("/tasks/{task_id}/status", response_model=TaskStatus)
def task_status(request: Request, app: str, version: str, entrypoint: str, task_id: str, who: Principal = Depends(principal)) -> TaskStatus:
    """The task's status in the Swiss AI Center's words (pending, fetching, processing, saving,
    finished, error)."""
    backend: Backend = request.app.state.backend
    run = _find_task(backend, who.user, task_id)
    if run is None:
        raise ApiError(404, f"no task {task_id}", "task_id", "start it with POST /compute")
    state = run.state.name if run.state else "Scheduled"
    data_out = None
    if run.state and run.state.is_completed():
        from jobcloud.deployments.jobs.result import read_manifest

        manifest = read_manifest(backend.store, str(run.id)) or {}
        data_out = [o["key"] for o in manifest.get("outputs", [])]
        word = "finished"
    elif run.state and run.state.is_final():
        word = "error"
    elif run.state and run.state.is_running():
        word = PHASE_WORDS.get(phase_of(backend.client, run) or "", "processing")
    else:
        word = "pending"
    return TaskStatus(task_id=task_id, job_id=str(run.id), status=word, state=state, data_out=data_out)
