"""Work pools `cpu` and `gpu`, and their priority work queues.

Pools have the type `jobcloud`: Prefect's process worker with warm starts
(`deployments.worker.fast_worker`; `prefect worker start --pool cpu` picks it up through JobCloud's
`prefect.collections` entry point). A worker starts each flow run as a subprocess on its host;
the flow runs the application's container through the Docker SDK (Docker, or Podman's
Docker-compatible socket), staging inputs and uploading outputs around it. A process-style
worker rather than a Docker one, because:

* the container is the application's, not the flow's: the flow must run beside the engine to
  stage files, stream logs and collect outputs even when the container fails;
* Prefect's DockerWorker refuses Prefect's ephemeral server, and it would need an image with
  JobCloud inside for every application;
* a GPU host only needs the worker plus the engine: the flow turns the entrypoint's
  `hardware.GPU` (or a job's `hardware.gpu` override) into a Docker `DeviceRequest`.

A pool made earlier with type `process` keeps working with stock process workers (`deploy`
warns and leaves it).

The pool carries what a job's flow run needs beyond the host: its job template's `env` defaults
hold JOBCLOUD_STORAGE (the job store: a URL, a folder, or `block:<name>`) and JOBCLOUD_CONFIG
(the catalog's path: a flow run still reads the catalog, `flows.catalog_flows`, so the file must
be at that path on every worker host), as `jobcloud deploy` sees them, made absolute. So a
worker host runs the bare `prefect worker start --pool cpu` that the Prefect UI suggests, with
nothing of JobCloud's in its environment (the container engine is found on the host). Prefect
puts the template's `env` over the worker's own environment; a deployment's `env` job variable
goes over the pool's. A local folder as the store fits one host only (every worker would use
its own disk).

Priorities: a job's priority 0-5 (DECODE's; 5 is the most urgent, 0 the default) picks queue
`priority-<n>` of the pool. Prefect serves the queue with the lowest priority *number* first,
so `priority-5` gets Prefect priority 1 and `priority-0` Prefect priority 6.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from blocks.errors import ParameterError
from blocks.settings import get_settings

# Prefect (and the worker, which imports it) inside the functions: never before `ensure_api`.

POOLS = ("cpu", "gpu")
PRIORITIES = range(0, 6)
DEFAULT_PRIORITY = 0
POOL_TYPE = "jobcloud"
POOL_DESCRIPTIONS = {
    "cpu": "JobCloud jobs whose entrypoint asks for no GPU. Start a worker: prefect worker start --pool cpu",
    "gpu": "JobCloud jobs whose entrypoint asks for GPUs (hardware.GPU > 0). Run its workers on GPU hosts.",
}


def queue_name(priority: int) -> str:
    """The work queue of a job priority (0-5)."""
    if priority not in PRIORITIES:
        raise ParameterError(f"priority must be 0-5 (5 the most urgent), got {priority}")
    return f"priority-{priority}"


def prefect_priority(priority: int) -> int:
    """Prefect's queue priority (1 is served first) for a job priority (5 is the most urgent)."""
    return len(PRIORITIES) - priority


# The `env` defaults of a pool's job template that `jobcloud deploy` manages; others are left.
MANAGED_ENV = ("JOBCLOUD_POOL", "JOBCLOUD_STORAGE", "JOBCLOUD_CONFIG")
ENV_DESCRIPTION = (
    "Environment of each flow run, over the worker host's own. JobCloud's defaults, written by "
    "`jobcloud deploy`: JOBCLOUD_STORAGE (the job store every run uses: s3://, gs://, "
    "block:<name>, or a folder, which fits one host only), JOBCLOUD_CONFIG (the catalog's path on "
    "the worker host), JOBCLOUD_POOL. A worker host needs none of them in its own environment."
)


def pool_env(pool: str, catalog_path: str | None = None) -> dict[str, str]:
    """The settings a flow run of ``pool`` gets from the pool: this process's job store and
    catalog (``catalog_path``, default JOBCLOUD_CONFIG), relative paths made absolute here."""
    from deployments.worker.fast_worker import absolute_setting

    settings = get_settings()
    return {
        "JOBCLOUD_POOL": pool,
        "JOBCLOUD_STORAGE": absolute_setting(settings.storage_url),
        "JOBCLOUD_CONFIG": absolute_setting(str(catalog_path or settings.config)),
    }


def base_job_template(pool: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The pool's job template: the process worker's, with `env` defaults (JOBCLOUD_POOL, and
    ``env``: `pool_env` when `ensure_pools` writes it).

    A flow run's environment is the worker host's, then this template's `env`, then the
    deployment's `env` job variable, each over the one before.
    """
    from deployments.worker.fast_worker import JobCloudWorker

    template = JobCloudWorker.get_default_base_job_template()
    return with_env(template, {"JOBCLOUD_POOL": pool, **(env or {})})


def with_env(template: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """A copy of ``template`` whose `env` defaults carry ``env`` (other defaults kept)."""
    template = copy.deepcopy(template)
    prop = template["variables"]["properties"]["env"]
    prop["default"] = {**(prop.get("default") or {}), **env}
    prop["description"] = ENV_DESCRIPTION
    return template


def pool_settings(template: dict[str, Any] | None) -> dict[str, str]:
    """JobCloud's managed `env` defaults in a pool's job template."""
    try:
        defaults = template["variables"]["properties"]["env"].get("default") or {}  # type: ignore[index]
    except (KeyError, TypeError, AttributeError):
        return {}
    return {k: v for k, v in defaults.items() if k in MANAGED_ENV}


class PoolChange(BaseModel):
    """What `ensure_pools` did to one pool or queue."""

    name: str
    action: str  # created | updated | unchanged | warning
    detail: str = ""


def ensure_pools(
    client: Any, limits: dict[str, int | None] | None = None, catalog_path: str | None = None
) -> list[PoolChange]:
    """Create pools `cpu`/`gpu` and their queues if missing; apply concurrency limits given;
    write this process's job store and catalog path (``catalog_path``, default JOBCLOUD_CONFIG)
    into each pool's job template (`pool_env`).

    A limit of None leaves the pool's limit as it is; 0 removes it. Idempotent.
    """
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    limits = limits or {}
    unknown = set(limits) - set(POOLS)
    if unknown:
        raise ParameterError(f"unknown pool(s) {', '.join(sorted(unknown))}; pools are {', '.join(POOLS)}")
    changes: list[PoolChange] = []
    for pool in POOLS:
        limit = limits.get(pool)
        env = pool_env(pool, catalog_path)
        said = f"store {env['JOBCLOUD_STORAGE']}, catalog {env['JOBCLOUD_CONFIG']}"
        try:
            existing = client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(
                    name=pool,
                    type=POOL_TYPE,
                    description=POOL_DESCRIPTIONS[pool],
                    base_job_template=base_job_template(pool, env),
                    concurrency_limit=limit or None,
                )
            )
            changes.append(PoolChange(name=pool, action="created", detail=f"limit {limit or 'none'}; {said}"))
        else:
            ours = existing.type == POOL_TYPE
            if not ours:
                changes.append(
                    PoolChange(name=pool, action="warning", detail=f"is a {existing.type!r} pool, not {POOL_TYPE!r}; left as it is")
                )
            update: dict[str, Any] = {}
            details = []
            wanted = limit or None
            if limit is not None and existing.concurrency_limit != wanted:
                update["concurrency_limit"] = wanted
                details.append(f"limit {wanted or 'none'}")
            if ours and pool_settings(existing.base_job_template) != env:
                template = existing.base_job_template or {}
                has_env = isinstance(template.get("variables", {}).get("properties", {}).get("env"), dict)
                update["base_job_template"] = with_env(template, env) if has_env else base_job_template(pool, env)
                details.append(said)
            if update:
                client.update_work_pool(pool, WorkPoolUpdate(**update))
                changes.append(PoolChange(name=pool, action="updated", detail="; ".join(details)))
            else:
                changes.append(PoolChange(name=pool, action="unchanged"))
        changes += _ensure_queues(client, pool)
    return changes


def _ensure_queues(client: Any, pool: str) -> list[PoolChange]:
    from prefect.client.schemas.objects import WorkQueue  # noqa: F401 - type only

    existing = {q.name: q for q in client.read_work_queues(work_pool_name=pool)}
    changes: list[PoolChange] = []
    # Most urgent first: Prefect shifts lower-priority queues down when a priority is taken.
    for p in sorted(PRIORITIES, reverse=True):
        name, wanted = queue_name(p), prefect_priority(p)
        queue = existing.get(name)
        if queue is None:
            client.create_work_queue(
                name=name, work_pool_name=pool, priority=wanted,
                description=f"JobCloud jobs of priority {p} (5 is the most urgent)",
            )
            changes.append(PoolChange(name=f"{pool}/{name}", action="created", detail=f"prefect priority {wanted}"))
    # Creating queues may have shifted others: set what still differs.
    for q in client.read_work_queues(work_pool_name=pool):
        if q.name.startswith("priority-") and q.name[9:].isdigit() and int(q.name[9:]) in PRIORITIES:
            wanted = prefect_priority(int(q.name[9:]))
            if q.priority != wanted:
                client.update_work_queue(q.id, priority=wanted)
                if not any(c.name == f"{pool}/{q.name}" for c in changes):
                    changes.append(PoolChange(name=f"{pool}/{q.name}", action="updated", detail=f"prefect priority {wanted}"))
    return changes
