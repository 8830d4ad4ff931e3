"""TES tasks on the Prefect server: create one, read one, list a user's, page tokens.

A task is a flow run of `tes-task/tes-v1-task` (`tes-v1-task-gpu` when it asks for GPUs),
tagged `tes` and `user:<name>` (its owner), each TES tag as `tes-tag:<key>=<value>`, named
after the task. Its parameters are the task document (what GET answers) and its plan (what
the flow runs).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from jobcloud.deployments.http_api.errors import ApiError
from jobcloud.deployments.http_api.services import owner_of, owner_tag
from jobcloud.deployments.jobs.landing import land, new_idempotency_key
from jobcloud.deployments.jobs.submit import DeploymentMissingError, api_url_of
from jobcloud.flows.tes_plan import TES_DEPLOYMENTS, TES_FLOW_NAME, TES_TAG, TesPlan

MAX_TAGS = 20
MAX_TAG_CHARS = 200
BATCH = 200
DEFAULT_PAGE_SIZE = 256
MAX_PAGE_SIZE = 2047  # TES: "must be less than 2048"


def deployment_for(plan: TesPlan) -> str:
    """`<flow>/<deployment>` a task runs as: the gpu pool's when it asks for GPUs."""
    return f"{TES_FLOW_NAME}/{TES_DEPLOYMENTS['gpu' if plan.gpu > 0 else 'cpu']}"


def run_tags(user: str, tags: dict[str, str] | None) -> list[str]:
    """The flow run's tags. TES tags get a prefix of their own: a TES tag `user` never passes
    for the owner tag."""
    extra = [f"tes-tag:{k}={v}"[:MAX_TAG_CHARS] for k, v in list((tags or {}).items())[:MAX_TAGS]]
    return [TES_TAG, owner_tag(user), *extra]


def create_task(client: Any, user: str, name: str | None, document: dict[str, Any], plan: TesPlan) -> Any:
    """Create the flow run; returns it. The deployment missing is the operator's to fix
    (`jobcloud deploy`); said as a 400 (`DeploymentMissingError`), as `POST /jobs` says it."""
    from prefect.exceptions import ObjectNotFound

    full_name = deployment_for(plan)
    key = new_idempotency_key()

    def once() -> Any:
        try:
            deployment = client.read_deployment_by_name(full_name)
        except ObjectNotFound:
            raise DeploymentMissingError(
                f"no deployment {full_name!r} on the Prefect server; the operator runs `jobcloud deploy`"
            ) from None
        return client.create_flow_run_from_deployment(
            deployment.id,
            parameters={"task": document, "plan": plan.model_dump(mode="json")},
            tags=run_tags(user, document.get("tags")),
            idempotency_key=key,
            **({"name": name[:200]} if name else {}),
        )

    from jobcloud.blocks.settings import get_settings

    return land(once, api_url_of(client), get_settings().submit_patience_s)


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


def user_runs(client: Any, user: str | None, start: int, name_prefix: str | None) -> Iterator[tuple[int, Any]]:
    """The TES flow runs of ``user`` (everyone's for None), newest first, from position
    ``start``, with each one's position (what a page token records)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    flt = FlowRunFilter(tags=FlowRunFilterTags(all_=[TES_TAG, *([owner_tag(user)] if user else [])]))
    if name_prefix:
        flt.name = FlowRunFilterName(like_=name_prefix)  # a substring match; the prefix is checked by the caller
    offset = start
    while True:
        batch = client.read_flow_runs(flow_run_filter=flt, sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=BATCH, offset=offset)
        for i, run in enumerate(batch):
            yield offset + i, run
        if len(batch) < BATCH:
            return
        offset += len(batch)


def _check(position: int, user: str) -> str:
    return hashlib.sha256(f"tes-page:{user}:{position}".encode()).hexdigest()[:12]


def page_token(position: int, user: str) -> str:
    """An opaque token for "continue at ``position``" (checked on its way back, so a token that
    was never issued is a 400, not an empty page)."""
    return base64.urlsafe_b64encode(f"{position}.{_check(position, user)}".encode()).decode().rstrip("=")


def read_page_token(token: str, user: str) -> int:
    bad = ApiError(400, "page_token: not a token this server issued", "page_token", "pass next_page_token of the previous page")
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        position_text, check = text.split(".", 1)
        position = int(position_text)
    except (ValueError, UnicodeDecodeError):
        raise bad from None
    if position < 0 or check != _check(position, user):
        raise bad
    return position
