"""Jobs: start one of an entrypoint, list the caller's, show one, its logs, its files, cancel.

A job started here is exactly a `jobcloud run` job (`jobcloud.deployments.jobs.submit`), with the tag
`user:<name>`. Input keys are relative to the caller's folder; `jobs/<id>/...` keys (an earlier
job's artifact or outputs) are allowed for the caller's own jobs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from jobcloud.blocks.errors import MissingKeyError, UserError
from jobcloud.blocks.keys import check_key
from jobcloud.deployments.http_api.auth import Principal, owner_for, principal
from jobcloud.deployments.http_api.errors import ApiError, from_user_error
from jobcloud.deployments.http_api.routes_files import stream_file
from jobcloud.deployments.http_api.services import Backend, owner_of, owner_tag, user_key, user_root
from jobcloud.deployments.jobs.show import JobInfo, UnknownJobError, cancel_job, job_logs, list_jobs
from jobcloud.deployments.jobs.submit import submit
from jobcloud.deployments.pools.work_pools import DEFAULT_PRIORITY
from jobcloud.flows.catalog import EntrypointRef, load_catalog
from jobcloud.flows.manifest import job_prefix
from jobcloud.flows.request import JobRequest, validate_request

router = APIRouter(tags=["jobs"])


class ArraySubmission(BaseModel):
    """A job array in `POST /jobs`: rows (keys relative to your folder) or a prefix of your folder."""

    model_config = ConfigDict(extra="forbid")
    elements: list[dict[str, Any]] = Field(default_factory=list, description="One row per element: job parameters that win over the job's.")
    over: str | None = Field(
        None, description="Instead of rows: one element per file or folder under this key of your folder (its data_ids)."
    )
    parallel: int = Field(0, ge=0, description="At most this many elements at once (0: what the worker host holds).")
    shards: int | None = Field(None, ge=1, description="Flow runs to split the array into (default: one per JOBCLOUD_ARRAY_SHARD_SIZE).")
    max_failures: int = Field(0, ge=0, description="Start no new element after this many failed (0: never stop early).")


class StartJob(JobRequest):
    """A job of ENTRYPOINT with the flow's parameters (keys relative to your folder)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "entrypoint": "linefit/v1/train",
                "config_id": "examples/config.yaml",
                "data_ids": ["examples/points.csv"],
                "env": {"LINEFIT_EPOCHS": "50"},
            }
        },
    )
    entrypoint: str = Field(description="APPLICATION/VERSION/ENTRYPOINT, e.g. linefit/v1/train.")
    priority: int = Field(DEFAULT_PRIORITY, ge=0, le=5, description="Queue priority 0 (first) .. 5.")
    array: ArraySubmission | None = Field(
        None, description="A job array: one element per row; the fields above are every element's defaults."
    )


class Started(BaseModel):
    id: str
    entrypoint: str
    state: str
    owner: str
    runs: list[str] | None = Field(None, description="A job array's flow runs (one per shard); `id` is the array's.")
    elements: int | None = Field(None, description="A job array's elements.")


class LogLine(BaseModel):
    time: datetime
    level: str
    message: str


def _backend(request: Request) -> Backend:
    return request.app.state.backend


def map_inputs(backend: Backend, who: Principal, user: str, request: JobRequest) -> JobRequest:
    """The request with every input key as a job-store key: `users/<user>/<key>`, or an own
    job's `jobs/<id>/...`. Each must exist; a 400 names the field otherwise."""

    def one(kind: str, key: str) -> str:
        parts = check_key(key).split("/")
        if parts[0] == "jobs" and len(parts) >= 2:
            try:
                parts[1] = _owned_by(backend, user, parts[1])
            except ApiError:
                raise ApiError(400, f"{kind}: no job {parts[1]} of yours", kind, "give jobs/<id>/artifact of one of your jobs") from None
            full = "/".join(parts)
        else:
            full = user_key(user, key, kind)
        try:
            backend.store.require(full)
        except MissingKeyError:
            raise ApiError(
                400, f"{kind}: no such key {key!r}", kind, "upload it first (PUT /files/KEY) or list yours with GET /files"
            ) from None
        return full

    try:
        return request.model_copy(
            update={
                "config_id": one("config_id", request.config_id) if request.config_id else None,
                "data_ids": [one("data_ids", k) for k in request.data_ids],
                "artifact_ids": [one("artifact_ids", k) for k in request.artifact_ids],
            }
        )
    except ApiError:
        raise
    except UserError as exc:
        raise from_user_error(exc) from None


def _owned_by(backend: Backend, user: str, job_id: str) -> str:
    """The canonical id of ``user``'s job ``job_id``; 404 for anyone else's."""
    from jobcloud.deployments.jobs.show import UnknownJobError, read_run

    try:
        run = read_run(backend.client, job_id)
    except UnknownJobError:
        raise ApiError(404, f"no job {job_id}") from None
    if owner_of(run) != user:
        raise ApiError(404, f"no job {job_id}")
    return str(run.id)


def _entrypoint_for(who: Principal, entrypoint: str, request: JobRequest) -> tuple[EntrypointRef, Any]:
    """The entrypoint a job asks for (404 if none) after the one rule on who may ask what: only
    an admin chooses Secret blocks."""
    if request.secrets and not who.is_admin:
        raise ApiError(403, "only an admin may choose secret blocks", "secrets", "drop secrets; the catalog's defaults apply")
    try:
        ref = EntrypointRef.parse(entrypoint)
        return ref, load_catalog().get(ref)
    except UserError as exc:
        raise ApiError(404, str(exc), "entrypoint", "list them with GET /applications") from None


def start_job(
    backend: Backend,
    who: Principal,
    user: str,
    entrypoint: str,
    request: JobRequest,
    priority: int = DEFAULT_PRIORITY,
    extra_tags: list[str] | None = None,
    max_active: int = 0,
) -> Any:
    """Validate and submit one job for ``user``; returns the flow run. Nothing is created when
    any check fails."""
    ref, entry = _entrypoint_for(who, entrypoint, request)
    for kind, key in request.inputs():  # first, so a bad key's error names its field
        try:
            check_key(key)
        except UserError as exc:
            raise from_user_error(exc, kind) from None
    try:
        checked = validate_request(entry, request)
    except UserError as exc:
        raise from_user_error(exc) from None
    mapped = map_inputs(backend, who, user, checked)
    with backend.submit_lock:
        if max_active and backend.active_jobs(user) >= max_active:
            raise ApiError(
                429,
                f"{user} already has {max_active} jobs queued or running",
                None,
                "wait for one to end or cancel one (JOBCLOUD_API_MAX_ACTIVE_JOBS sets the bound)",
            )
        return submit(backend.client, ref, mapped, priority, extra_tags=[owner_tag(user), *(extra_tags or [])])


@router.post("/jobs", response_model=Started, status_code=201)
def start(request: Request, body: StartJob, owner: str | None = None, who: Principal = Depends(principal)) -> Started:
    """Start a job of ENTRYPOINT; returns its id at once (poll GET /jobs/{id})."""
    user = owner_for(who, owner)
    job = JobRequest.model_validate(body.model_dump(exclude={"entrypoint", "priority", "array"}))
    if body.array is not None:
        return start_array(request, who, user, body.entrypoint, job, body.array, body.priority)
    run = start_job(
        _backend(request), who, user, body.entrypoint, job, body.priority, max_active=request.app.state.settings.max_active_jobs
    )
    return Started(id=str(run.id), entrypoint=body.entrypoint, state=run.state.name if run.state else "Scheduled", owner=user)


@router.get("/jobs", response_model=list[JobInfo])
def list_(
    request: Request,
    app: str | None = None,
    state: str | None = Query(None, description="queued, running, finished, error, cancelled or a Prefect state name."),
    owner: str | None = None,
    who: Principal = Depends(principal),
) -> list[JobInfo]:
    """The caller's jobs, newest first (an admin sees everyone's unless `owner` is given)."""
    tags = None if who.is_admin and owner is None else [owner_tag(owner_for(who, owner))]
    try:
        return list_jobs(_backend(request).client, app=app, state=state, tags=tags)
    except UserError as exc:
        raise from_user_error(exc, "state") from None


@router.get("/jobs/{job_id}", response_model=JobInfo)
async def show(request: Request, job_id: str, who: Principal = Depends(principal)) -> Response:
    """One job: state, phase, timings, parameters, manifest. An ended job's answer comes from
    memory; a queued or running one's is at most JOBCLOUD_API_JOB_REFRESH_S (1 s) old."""
    try:
        answer = await request.app.state.jobs.get(job_id)  # job_cache.JobCache
    except UnknownJobError:
        raise ApiError(404, f"no job {job_id}", "job_id", "list yours with GET /jobs") from None
    if not who.is_admin and answer.owner != who.user:
        raise ApiError(404, f"no job {job_id}", "job_id", "list yours with GET /jobs")
    return Response(answer.body, media_type="application/json")  # the bytes of the JobInfo, made once


@router.get("/jobs/{job_id}/logs", response_model=list[LogLine])
def logs(request: Request, job_id: str, who: Principal = Depends(principal)) -> list[LogLine]:
    """The job's log lines so far, oldest first (the flow's and the container's)."""
    backend = _backend(request)
    run = backend.owned_run(who, job_id)
    return [LogLine(time=t, level=lv, message=m) for t, lv, m in job_logs(backend.client, str(run.id))]


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, job_id: str, who: Principal = Depends(principal)) -> dict[str, str]:
    """Cancel the job (a queued one at once, a running one through its worker)."""
    backend = _backend(request)
    run = backend.owned_run(who, job_id)
    if run.state and run.state.is_final():
        raise ApiError(409, f"job {job_id} already ended ({run.state.name})", "job_id", "nothing to cancel")
    return {"id": str(run.id), "state": cancel_job(backend.client, str(run.id))}


@router.get("/jobs/{job_id}/files")
def job_files(request: Request, job_id: str, who: Principal = Depends(principal)) -> dict[str, Any]:
    """The job's files (output/, log/, artifact/, manifest.json), keys relative to jobs/<id>/."""
    backend = _backend(request)
    prefix = job_prefix(str(backend.owned_run(who, job_id).id))
    try:
        found = backend.store.files(prefix)
    except MissingKeyError:
        found = []
    return {"id": prefix[5:], "files": [{"path": k[len(prefix) + 1 :], "size": s} for k, s in found]}


@router.get(
    "/jobs/{job_id}/files/{path:path}", response_class=StreamingResponse, responses={200: {"content": {"application/octet-stream": {}}}}
)
def job_file(request: Request, job_id: str, path: str, who: Principal = Depends(principal)) -> StreamingResponse:
    """Download one of the job's files, e.g. output/metrics.txt, streamed."""
    backend = _backend(request)
    prefix = job_prefix(str(backend.owned_run(who, job_id).id))
    try:
        key = f"{prefix}/{check_key(path)}"
    except UserError as exc:
        raise from_user_error(exc, "path") from None
    return stream_file(backend.store, key, path)


def start_array(
    request: Request, who: Principal, user: str, entrypoint: str, base: JobRequest, array: ArraySubmission, priority: int
) -> Started:
    """Check every row (keys mapped into the user's folder, each must exist), then submit one flow
    run per shard; a bad row is a 400 naming the row and the field, with nothing submitted."""
    from jobcloud.deployments.jobs.arrays import plan_array, rows_over, submit_array
    from jobcloud.flows.array_request import element_requests

    backend = _backend(request)
    ref, entry = _entrypoint_for(who, entrypoint, base)
    if bool(array.elements) == bool(array.over):
        raise ApiError(400, "give the array's elements or over (a prefix of your folder), one of them", "array")
    try:
        root = f"{user_root(user)}/"
        # Keys relative to the user's folder, as a row would give them (map_inputs maps them back).
        rows = array.elements or [
            {"data_ids": [e["data_ids"][0].removeprefix(root)]}
            for e in rows_over(backend.store, user_key(user, array.over or "", "array.over"))
        ]
        mapped_rows = []
        for (_, element), row in zip(element_requests(entry, base, rows), rows, strict=True):
            if element.secrets and not who.is_admin:
                raise ApiError(403, "only an admin may choose secret blocks", "secrets")
            try:
                mapped = map_inputs(backend, who, user, element)
            except ApiError as exc:
                raise ApiError(exc.status, f"array row {len(mapped_rows) + 1}: {exc.message}", exc.field, exc.fix) from None
            given = {k: getattr(mapped, k) for k in ("config_id", "data_ids", "artifact_ids") if k in row}
            mapped_rows.append({**row, **given})
        mapped_base = map_inputs(backend, who, user, base) if base.inputs() else base
        plan = plan_array(
            entry, mapped_base, mapped_rows, backend.store, parallel=array.parallel, shards=array.shards, max_failures=array.max_failures
        )
    except ApiError:
        raise
    except UserError as exc:
        raise from_user_error(exc, "array") from None
    max_active = request.app.state.settings.max_active_jobs
    with backend.submit_lock:
        if max_active and backend.active_jobs(user) + len(plan.shards) > max_active:
            raise ApiError(
                429,
                f"{user} already has jobs queued or running; this array's {len(plan.shards)} runs would pass the bound of {max_active}",
                None,
                "wait for one to end or cancel one (JOBCLOUD_API_MAX_ACTIVE_JOBS sets the bound)",
            )
        array_id, runs = submit_array(backend.client, ref, plan, priority, extra_tags=[owner_tag(user)])
    return Started(id=array_id, entrypoint=entrypoint, state="Scheduled", owner=user, runs=[str(r.id) for r in runs], elements=plan.total)
