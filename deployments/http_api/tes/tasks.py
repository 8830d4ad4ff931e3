"""TES tasks on the Prefect server: create one, read one, list a user's, page tokens.

A task is a flow run of `tes-task/tes-v1-task` (`tes-v1-task-gpu` when it asks for GPUs),
tagged `tes` and `user:<name>` (its owner), each TES tag as `tes-tag:<key>=<value>`, named
after the task. Its parameters are the task document (what GET answers) and its plan (what
the flow runs).

Creating one costs the Prefect server one request (`create_flow_run_from_deployment`): the
deployment's id is read once per API process (`DeploymentIds`), and at most `CREATE_CONCURRENCY`
creates of one API process are in flight at once (`CREATE_GATE`). A SQLite server lets one writer
commit at a time and answers a create that finds the database taken `503`; every collision then
costs seconds of back-off (the Prefect client's 2, 4, 8 ... s and `land`'s), so letting the
creates of one process queue here, in order, gives more tasks per second and a shorter tail than
letting them collide there (docs/benchmarks.md#ga4gh-tes-benchtespy).
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from jobcloud.deployments.http_api.errors import ApiError
from jobcloud.deployments.http_api.services import owner_of, owner_tag
from jobcloud.deployments.jobs.landing import SubmitRefusedError, land, new_idempotency_key
from jobcloud.deployments.jobs.submit import DeploymentMissingError, api_url_of
from jobcloud.flows.tes_plan import TES_DEPLOYMENTS, TES_FLOW_NAME, TES_TAG, TesPlan

MAX_TAGS = 20
MAX_TAG_CHARS = 200
BATCH = 200
DEFAULT_PAGE_SIZE = 256
MAX_PAGE_SIZE = 2047  # TES: "must be less than 2048"
# Creates of one API process in flight at once. On SQLite (bench/tes.py, 20 clients) 1 gave 6-7
# tasks/s, 4 gave 9-16 with a p95 near 3 s, unbounded (the code before) 7 with a p95 of 12 s; on
# PostgreSQL 4 gave 36-40/s, 16 gave 34-35/s (docs/benchmarks.md#ga4gh-tes-benchtespy).
CREATE_CONCURRENCY = 4
CREATE_GATE: threading.BoundedSemaphore | None = threading.BoundedSemaphore(CREATE_CONCURRENCY)


def deployment_for(plan: TesPlan) -> str:
    """`<flow>/<deployment>` a task runs as: the gpu pool's when it asks for GPUs."""
    return f"{TES_FLOW_NAME}/{TES_DEPLOYMENTS['gpu' if plan.gpu > 0 else 'cpu']}"


def run_tags(user: str, tags: dict[str, str] | None) -> list[str]:
    """The flow run's tags. TES tags get a prefix of their own: a TES tag `user` never passes
    for the owner tag."""
    extra = [f"tes-tag:{k}={v}"[:MAX_TAG_CHARS] for k, v in list((tags or {}).items())[:MAX_TAGS]]
    return [TES_TAG, owner_tag(user), *extra]


class DeploymentIds:
    """Deployment ids by server and `<flow>/<deployment>` name, read once per API process.

    An id goes stale when the deployment is deleted (or deleted and deployed again, under a new
    id); a create with it is then a 404, and `create_task` forgets it (`forget`) and reads the
    name again."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], UUID] = {}
        self._lock = threading.Lock()

    def get(self, client: Any, full_name: str) -> UUID:
        """The id of deployment ``full_name``; `DeploymentMissingError` when the server has none."""
        from prefect.exceptions import ObjectNotFound

        key = (api_url_of(client), full_name)
        with self._lock:
            known = self._ids.get(key)
        if known is not None:
            return known
        try:
            deployment = client.read_deployment_by_name(full_name)
        except ObjectNotFound:
            raise DeploymentMissingError(
                f"no deployment {full_name!r} on the Prefect server; the operator runs `jobcloud deploy`"
            ) from None
        with self._lock:
            self._ids[key] = deployment.id
        return deployment.id

    def forget(self, client: Any, full_name: str, stale: UUID) -> None:
        """Drop ``stale`` (unless another request already put a newer id in its place)."""
        key = (api_url_of(client), full_name)
        with self._lock:
            if self._ids.get(key) == stale:
                del self._ids[key]


DEPLOYMENT_IDS = DeploymentIds()


def _is_404(exc: BaseException) -> bool:
    import httpx

    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 404


def create_task(
    client: Any,
    user: str,
    name: str | None,
    document: dict[str, Any],
    plan: TesPlan,
    *,
    ids: DeploymentIds | None = None,
    gate: Any = CREATE_GATE,
    landing: Callable[..., Any] = land,
) -> Any:
    """Create the flow run; returns it. The deployment missing is the operator's to fix
    (`jobcloud deploy`); said as a 400 (`DeploymentMissingError`), as `POST /jobs` says it.

    Every attempt sends the same idempotency key, so a create whose answer was lost and is sent
    again returns the run it made. When the server refused for load until the patience was spent
    and an attempt got no answer, the run may exist all the same: it is looked up by that key
    before the refusal (a 503) is answered, so a task that was made is not answered with a 5xx
    (a client would send it again and get a second one). ``ids``, ``gate`` and ``landing`` are
    for tests."""
    ids = ids or DEPLOYMENT_IDS
    full_name = deployment_for(plan)
    key = new_idempotency_key()
    kwargs: dict[str, Any] = {
        "parameters": {"task": document, "plan": plan.model_dump(mode="json")},
        "tags": run_tags(user, document.get("tags")),
        "idempotency_key": key,
        **({"name": name[:200]} if name else {}),
    }

    def create(deployment_id: UUID) -> Any:
        with gate or nullcontext():  # held for the request only, never across `land`'s waits
            return client.create_flow_run_from_deployment(deployment_id, **kwargs)

    def once() -> Any:
        deployment_id = ids.get(client, full_name)
        try:
            return create(deployment_id)
        except Exception as exc:
            if not _is_404(exc):
                raise
        ids.forget(client, full_name, deployment_id)  # deleted (or redeployed) since it was read
        return create(ids.get(client, full_name))

    from jobcloud.blocks.settings import get_settings

    try:
        return landing(once, api_url_of(client), get_settings().submit_patience_s)
    except SubmitRefusedError:
        # Asked whatever the refusals were: one read, only when the patience is spent.
        landed = run_with_key(client, key)
        if landed is not None:
            return landed
        raise


def run_with_key(client: Any, key: str) -> Any:
    """The flow run created with idempotency key ``key``; None when there is none or the server
    cannot say (the caller then answers its refusal, which says the task may exist)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey

    try:
        found = client.read_flow_runs(flow_run_filter=FlowRunFilter(idempotency_key=FlowRunFilterIdempotencyKey(any_=[key])), limit=1)
    except Exception:  # noqa: BLE001 - still busy or unreachable: the refusal stands
        return None
    return found[0] if found else None


def is_task(run: Any) -> bool:
    return TES_TAG in (run.tags or []) and "task" in (run.parameters or {})


def owned_task(client: Any, who: Any, task_id: str) -> Any:
    """The flow run of task ``task_id`` if the caller may see it; 404 otherwise (another
    user's task, a JobCloud job that is no task, a malformed id)."""
    from prefect.exceptions import ObjectNotFound

    missing = ApiError(404, f"no task {task_id}", "id", "list yours with GET /ga4gh/tes/v1/tasks")
    try:
        run = client.read_flow_run(UUID(task_id))
    except (ValueError, ObjectNotFound):
        raise missing from None
    if not is_task(run) or (not who.is_admin and owner_of(run) != who.user):
        raise missing
    return run


class PageMark(BaseModel):
    """Where the next page starts: after the runs expected to start at ``time`` whose ids are
    ``ids`` (the ones already answered at that instant), and before every later one. Marks on
    the runs themselves, not positions: a task created while a client pages is newer than the
    mark and never shifts a later page (no task twice, none skipped)."""

    model_config = ConfigDict(extra="forbid")

    time: datetime
    ids: list[str] = Field(min_length=1)


def user_runs(client: Any, user: str | None, after: PageMark | None, name_prefix: str | None) -> Iterator[Any]:
    """The TES flow runs of ``user`` (everyone's for None), newest first (by the time each was
    expected to start, which Prefect sets once), from ``after`` on."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterExpectedStartTime, FlowRunFilterName, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    flt = FlowRunFilter(tags=FlowRunFilterTags(all_=[TES_TAG, *([owner_tag(user)] if user else [])]))
    if name_prefix:
        flt.name = FlowRunFilterName(like_=name_prefix)  # a substring match; the prefix is checked by the caller
    if after is not None:
        flt.expected_start_time = FlowRunFilterExpectedStartTime(before_=after.time)  # at or before
    offset = 0
    while True:
        batch = client.read_flow_runs(flow_run_filter=flt, sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=BATCH, offset=offset)
        for run in batch:
            if after is not None and run.expected_start_time == after.time and str(run.id) in after.ids:
                continue  # answered on an earlier page
            yield run
        if len(batch) < BATCH:
            return
        offset += len(batch)


def next_mark(answered: list[Any], after: PageMark | None) -> PageMark:
    """The mark after the runs of this page (``answered``, in order, not empty): the last one's
    time, with every run answered at that instant on this page or, at the same instant, before."""
    time = answered[-1].expected_start_time
    ids = [str(r.id) for r in answered if r.expected_start_time == time]
    if after is not None and after.time == time:
        ids = [*after.ids, *ids]
    return PageMark(time=time, ids=ids)


def _check(text: str, user: str) -> str:
    return hashlib.sha256(f"tes-page:{user}:{text}".encode()).hexdigest()[:12]


def page_token(mark: PageMark, user: str) -> str:
    """An opaque token for ``mark`` (checked on its way back, so a token that was never issued
    is a 400, not an empty page)."""
    text = mark.model_dump_json()
    return base64.urlsafe_b64encode(f"{_check(text, user)}.{text}".encode()).decode().rstrip("=")


def read_page_token(token: str, user: str) -> PageMark:
    bad = ApiError(400, "page_token: not a token this server issued", "page_token", "pass next_page_token of the previous page")
    try:
        check, text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().split(".", 1)
        if check != _check(text, user):
            raise bad
        return PageMark.model_validate_json(text)
    except (ValueError, UnicodeDecodeError):
        raise bad from None
