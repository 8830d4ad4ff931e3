"""GA4GH TES v1.1 under `/ga4gh/tes/v1` (docs/tes.md): service-info, create, list, get, cancel.

The caller is the API's (`Authorization: Bearer <API key>`, `auth.principal`); a user sees
only their own tasks (another's id is a 404), an admin everyone's. Bad input is a 400 (not
FastAPI's 422) naming the field, with nothing created.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from jobcloud.blocks.errors import UserError
from jobcloud.deployments.http_api.auth import Principal, principal
from jobcloud.deployments.http_api.errors import ApiError, body, from_user_error
from jobcloud.deployments.http_api.services import Backend
from jobcloud.deployments.http_api.tes import tasks
from jobcloud.deployments.http_api.tes.models import (
    MinimalTask,
    TesCreateTaskResponse,
    TesListTasksResponse,
    TesOrganization,
    TesServiceInfo,
    TesState,
    TesTask,
    TesView,
)
from jobcloud.deployments.http_api.tes.rules import TesRules
from jobcloud.deployments.http_api.tes.states import state_of_run
from jobcloud.deployments.http_api.tes.translate import BACKEND_PARAMETERS, plan_of, store_base, stored_document
from jobcloud.deployments.http_api.tes.views import task_view
from jobcloud.deployments.jobs.show import cancel_job, phase_of

PREFIX = "/ga4gh/tes/v1"


class TesRoute(APIRoute):
    """A route whose request validation errors are 400s naming the field (TES's "bad
    request"), in the API's one error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
                field = _field(loc) or "body"
                if first.get("type") == "json_invalid":
                    field = "body"
                message = f"{field}: {first.get('msg', 'invalid')}"
                return JSONResponse(body(400, message, field, "see the TES v1.1 schema of this field"), status_code=400)

        return checked


def _field(loc: list[str]) -> str:
    """`inputs.0.url` as `inputs[0].url`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


router = APIRouter(prefix=PREFIX, tags=["GA4GH TES v1.1"], route_class=TesRoute)


def _backend(request: Request) -> Backend:
    return request.app.state.backend


def _answer(model: Any) -> Response:
    """Only the fields that are set: TES clients refuse nulls where the spec has none."""
    return Response(model.model_dump_json(exclude_none=True), media_type="application/json")


@router.get("/service-info", response_model=TesServiceInfo, response_model_exclude_none=True)
def service_info(request: Request, who: Principal = Depends(principal)) -> Response:
    """The service, its storage (the job store's URL) and the backend_parameters it takes."""
    from importlib.metadata import version

    return _answer(
        TesServiceInfo(
            id="org.jobcloud.tes",
            name="JobCloud TES",
            description="GA4GH TES v1.1 on JobCloud: each task is a Prefect flow run of the tes/v1/task deployment.",
            organization=TesOrganization(name="JobCloud", url="https://github.com/jobcloud"),
            version=version("jobcloud"),
            storage=[store_base(_backend(request).store)],
            tesResources_backend_parameters=sorted(BACKEND_PARAMETERS),
        )
    )


@router.post("/tasks", response_model=TesCreateTaskResponse)
def create(request: Request, task: TesTask, who: Principal = Depends(principal)) -> Response:
    """Create a task; its id at once (poll GET /tasks/{id})."""
    backend = _backend(request)
    settings = request.app.state.settings
    plan = plan_of(task, backend.store, who, TesRules.cached(settings), settings.tes_timeout_s)
    try:
        run = tasks.create_task(backend.client, who.user, task.name, stored_document(task), plan)
    except UserError as exc:
        raise from_user_error(exc) from None
    return _answer(TesCreateTaskResponse(id=str(run.id)))


def _state(client: Any, run: Any) -> TesState:
    """The task's state; inside Running, the task run that runs tells staging from executing."""
    running = run.state is not None and run.state.is_running()
    return state_of_run(run, phase_of(client, run) if running else None)


@router.get("/tasks", response_model=TesListTasksResponse, response_model_exclude_none=True)
def list_tasks(
    request: Request,
    name_prefix: str | None = None,
    state: TesState | None = None,
    tag_key: list[str] = Query(default_factory=list),
    tag_value: list[str] = Query(default_factory=list),
    page_size: int = Query(tasks.DEFAULT_PAGE_SIZE, ge=1, le=tasks.MAX_PAGE_SIZE),
    page_token: str | None = None,
    view: TesView = TesView.MINIMAL,
    who: Principal = Depends(principal),
) -> Response:
    """The caller's tasks, newest first, filtered, one page at a time."""
    if len(tag_value) > len(tag_key):
        raise ApiError(400, "tag_value: more values than tag_key", "tag_value", "give one tag_key per tag_value")
    wanted = dict(zip(tag_key, [*tag_value, *[""] * (len(tag_key) - len(tag_value))]))
    after = tasks.read_page_token(page_token, who.user) if page_token else None
    backend = _backend(request)
    found: list[TesTask | MinimalTask] = []
    answered: list[Any] = []  # the runs of `found`, for the next page's mark
    next_token = None
    owner = None if who.is_admin else who.user
    for run in tasks.user_runs(backend.client, owner, after, name_prefix):
        if not tasks.is_task(run):
            continue
        doc = run.parameters["task"]
        if name_prefix and not (doc.get("name") or "").startswith(name_prefix):
            continue
        if not _tags_match(doc.get("tags") or {}, wanted):
            continue
        current = _state(backend.client, run)
        if state is not None and current != state:
            continue
        if len(found) == page_size:
            next_token = tasks.page_token(tasks.next_mark(answered, after), who.user)
            break
        found.append(task_view(run, current, view, backend.store))
        answered.append(run)
    return _answer(TesListTasksResponse(tasks=found, next_page_token=next_token))


def _tags_match(tags: dict[str, str], wanted: dict[str, str]) -> bool:
    """TES's rule: every key wanted is there; a value wanted (not empty) matches exactly."""
    return all(k in tags and (not v or tags[k] == v) for k, v in wanted.items())


@router.get("/tasks/{id}", response_model=TesTask, response_model_exclude_none=True)
def get_task(request: Request, id: str, view: TesView = TesView.MINIMAL, who: Principal = Depends(principal)) -> Response:  # noqa: A002 - the spec's name
    """One task (default view MINIMAL)."""
    backend = _backend(request)
    run = tasks.owned_task(backend.client, who, id)
    return _answer(task_view(run, _state(backend.client, run), view, backend.store))


@router.post("/tasks/{id}:cancel")
def cancel(request: Request, id: str, who: Principal = Depends(principal)) -> dict[str, Any]:  # noqa: A002 - the spec's name
    """Cancel a task: a queued one at once, a running one through its worker. Cancelling a
    task that already ended changes nothing (TES: the answer is empty either way)."""
    backend = _backend(request)
    run = tasks.owned_task(backend.client, who, id)
    if run.state is not None and run.state.is_final():
        return {}
    try:
        cancel_job(backend.client, str(run.id))
    except UserError:
        pass  # it ended meanwhile
    return {}
