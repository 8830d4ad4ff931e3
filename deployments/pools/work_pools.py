"""Work pools `cpu` and `gpu`, and their priority work queues.

Pools have the type `jobcloud`: Prefect's process worker with warm starts
(`jobcloud.deployments.worker.fast_worker`; `prefect worker start --pool cpu` picks it up through JobCloud's
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

A pool can have one of Prefect's own worker types instead: `docker`, `kubernetes`, `ecs`,
`cloud-run-v2`, `vertex-ai` (`jobcloud deploy --pool-type cpu=docker`, or JOBCLOUD_POOL_TYPES;
`jobcloud.deployments.pools.types`). Then the job flow runs inside the application's image, and the
pool's template is JobCloud's version of the worker's own (`jobcloud.deployments.pools.templates`).
`deploy` checks every pool against the types wanted before it writes anything: an existing pool
of another type is an error that says how to fix it (nothing is registered half-way).

The pool carries what a job's flow run needs beyond the host: its job template's `env` defaults
hold JOBCLOUD_STORAGE (the job store: a URL, a folder, or `block:<name>`, as `jobcloud deploy`
sees it, made absolute) and JOBCLOUD_POOL; in-container pools also JOBCLOUD_RUNNER=process and
JOBCLOUD_WATCH_CANCEL=1. What a run executes travels with its deployment (its `env` job variable
JOBCLOUD_ENTRYPOINT), so no worker host needs the catalog file; JOBCLOUD_CONFIG, which older
JobClouds wrote into pools, is removed when `deploy` next updates the pool. So a worker host runs
the bare `prefect worker start --pool cpu` that the Prefect UI suggests, with nothing of
JobCloud's in its environment (the container engine is found on the host). Prefect puts the
template's `env` over the worker's own environment; a deployment's `env` job variable goes over
the pool's. A local folder as the store fits one host only (every worker would use its own disk).

Priorities: a job's priority 0-5 (DECODE's; 5 is the most urgent, 0 the default) picks queue
`priority-<n>` of the pool. Prefect serves the queue with the lowest priority *number* first,
so `priority-5` gets Prefect priority 1 and `priority-0` Prefect priority 6.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from jobcloud.blocks.errors import ParameterError
from jobcloud.blocks.settings import env_name, get_settings
from jobcloud.deployments.pools.templates import (
    IN_CONTAINER_COMMAND,
    IN_CONTAINER_ENV,
    command_of,
    in_container_template,
    local_store_path,
    template_gaps,
    with_env,
    with_store_volume,
)
from jobcloud.deployments.pools.types import (
    DEFAULT_POOL_TYPE,
    LEGACY_POOL_TYPE,
    POOL_TYPES,
    POOLS,
    PoolTypeError,
    is_in_container,
    parse_pool_types,
    require_pool_type,
)
from jobcloud.flows.pool_slots import pool_slots_name

# Prefect (and the worker, which imports it) inside the functions: never before `ensure_api`.

PRIORITIES = range(0, 6)
DEFAULT_PRIORITY = 0
POOL_TYPE = DEFAULT_POOL_TYPE
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
MANAGED_ENV = (env_name("pool"), env_name("storage"), *IN_CONTAINER_ENV)
# Written by older JobClouds, removed on the next update (the entrypoint travels with the deployment).
RETIRED_ENV = (env_name("config"),)


def pool_env(pool: str, catalog_path: str | None = None, pool_type: str = DEFAULT_POOL_TYPE) -> dict[str, str]:
    """The settings a flow run of ``pool`` gets from the pool: this process's job store (made
    absolute here) and the pool's name; for in-container pool types also JOBCLOUD_RUNNER and
    JOBCLOUD_WATCH_CANCEL. ``catalog_path`` is accepted for older callers and not used: the
    catalog no longer travels in the pool."""
    from jobcloud.deployments.worker.fast_worker import absolute_setting

    env = {
        env_name("pool"): pool,
        env_name("storage"): absolute_setting(get_settings().storage_url),
    }
    if is_in_container(pool_type):
        env.update(IN_CONTAINER_ENV)
    return env


def base_job_template(pool: str, env: dict[str, str] | None = None, pool_type: str = DEFAULT_POOL_TYPE) -> dict[str, Any]:
    """The pool's job template for ``pool_type``: for `jobcloud`, the process worker's, with `env`
    defaults (JOBCLOUD_POOL, and ``env``: `pool_env` when `ensure_pools` writes it); for the
    others, JobCloud's version of that worker's own (`pool_templates.in_container_template`).

    A flow run's environment is the worker's, then this template's `env`, then the deployment's
    `env` job variable, each over the one before.
    """
    if is_in_container(pool_type):
        return in_container_template(pool_type, pool, {env_name("pool"): pool, **(env or {})})
    from jobcloud.deployments.worker.fast_worker import JobCloudWorker

    template = JobCloudWorker.get_default_base_job_template()
    return with_env(template, {env_name("pool"): pool, **(env or {})})


def pool_settings(template: dict[str, Any] | None) -> dict[str, str]:
    """JobCloud's managed `env` defaults in a pool's job template (and retired ones still there)."""
    try:
        defaults = template["variables"]["properties"]["env"].get("default") or {}  # type: ignore[index]
    except (KeyError, TypeError, AttributeError):
        return {}
    return {k: v for k, v in defaults.items() if k in MANAGED_ENV or k in RETIRED_ENV}


def pool_type_of(client: Any, pool: str) -> str | None:
    """The worker type of work pool ``pool`` on the server, None when there is no such pool."""
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_work_pool(pool).type
    except ObjectNotFound:
        return None


class PoolChange(BaseModel):
    """What `ensure_pools` did to one pool or queue."""

    name: str
    action: str  # created | updated | unchanged | warning
    detail: str = ""


def check_pool_types(existing: dict[str, Any], wanted: dict[str, str]) -> list[str]:
    """The pools whose existing type is not the one wanted, each saying how to fix it. A legacy
    `process` pool where `jobcloud` is wanted passes (`ensure_pools` warns and leaves it)."""
    problems = []
    for pool, kind in wanted.items():
        have = getattr(existing.get(pool), "type", None)
        if have is None or have == kind or (have == LEGACY_POOL_TYPE and kind == DEFAULT_POOL_TYPE):
            continue
        problems.append(
            f"pool {pool!r} exists with type {have!r}, not {kind!r}: delete it "
            f"(`prefect work-pool delete {pool}`, its deployments' runs stop being served) and deploy again, "
            f"or keep it with --pool-type {pool}={have} (or JOBCLOUD_POOL_TYPES)"
        )
    return problems


def ensure_pools(
    client: Any,
    limits: dict[str, int | None] | None = None,
    catalog_path: str | None = None,
    pool_types: dict[str, str] | None = None,
) -> list[PoolChange]:
    """Create pools `cpu`/`gpu` and their queues if missing, each of its type in ``pool_types``
    (default: JOBCLOUD_POOL_TYPES, else `jobcloud`) with JobCloud's job template; apply the
    concurrency limits given; write this process's job store into each pool's template
    (`pool_env`). ``catalog_path`` is accepted for older callers and not used.

    Every pool is checked before anything is written: a type whose package is missing, or an
    existing pool of another type, raises PoolTypeError (exit 2) with the fix. A limit of None
    leaves the pool's limit as it is; 0 removes it. Idempotent.
    """
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    limits = limits or {}
    unknown = set(limits) - set(POOLS)
    if unknown:
        raise ParameterError(f"unknown pool(s) {', '.join(sorted(unknown))}; pools are {', '.join(POOLS)}")
    named = {**parse_pool_types([], get_settings().pool_types, fill=False), **(pool_types or {})}
    existing: dict[str, Any] = {}
    for pool in POOLS:
        try:
            existing[pool] = client.read_work_pool(pool)
        except ObjectNotFound:
            pass
    # A pool no option or setting names keeps the type it has (a later plain `deploy`, or
    # `deploy --watch`, must not fight an earlier `--pool-type`); a new one is `jobcloud`.
    wanted = {
        p: named.get(p) or (existing[p].type if p in existing and existing[p].type in POOL_TYPES else DEFAULT_POOL_TYPE) for p in POOLS
    }
    for kind in {wanted[p] for p in POOLS}:
        require_pool_type(kind)
    problems = check_pool_types(existing, {p: wanted[p] for p in POOLS})
    if problems:
        raise PoolTypeError("work pools do not have the types wanted; nothing was changed:\n" + "\n".join(f"  {p}" for p in problems))

    changes: list[PoolChange] = []
    for pool in POOLS:
        kind, limit = wanted[pool], limits.get(pool)
        env = pool_env(pool, pool_type=kind)
        said = f"type {kind}; store {env[env_name('storage')]}"
        if pool not in existing:
            client.create_work_pool(
                WorkPoolCreate(
                    name=pool,
                    type=kind,
                    description=POOL_DESCRIPTIONS[pool],
                    base_job_template=base_job_template(pool, env, kind),
                    concurrency_limit=limit or None,
                )
            )
            changes.append(PoolChange(name=pool, action="created", detail=f"limit {limit or 'none'}; {said}"))
        else:
            changes += _update_pool(client, existing[pool], pool, kind, limit, env, said, WorkPoolUpdate)
        changes += _store_warning(pool, kind, env[env_name("storage")])
        changes += sync_pool_slots(client, pool, limit)
        changes += _ensure_queues(client, pool)
    return changes


def sync_pool_slots(client: Any, pool: str, limit: int | None) -> list[PoolChange]:
    """Mirror a pool's concurrency limit in a Prefect global concurrency limit, which each job
    holds a slot of while its command runs (`jobcloud.flows.job`).

    Prefect counts a pool's limit only when a worker asks for work, against runs already
    Pending or Running: runs handed out but not yet Pending slip past it, so a busy pool served by
    several workers ran 10-11 jobs under a limit of 8. The slot is leased on the server, so at
    most ``limit`` commands of the pool run at once whatever the workers do. None: left as it
    is; 0: removed.
    """
    from prefect.exceptions import ObjectNotFound

    if limit is None:
        return []
    name = pool_slots_name(pool)
    if limit == 0:
        try:
            client.delete_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return []
        return [PoolChange(name=f"{pool}/slots", action="deleted", detail=name)]
    try:
        current = client.read_global_concurrency_limit_by_name(name).limit
    except ObjectNotFound:
        current = None
    if current == limit:
        return []
    client.upsert_global_concurrency_limit_by_name(name, limit)
    return [PoolChange(name=f"{pool}/slots", action="created" if current is None else "updated", detail=f"{name}: {limit}")]


def _update_pool(
    client: Any, pool_obj: Any, pool: str, kind: str, limit: int | None, env: dict[str, str], said: str, update_cls: Any
) -> list[PoolChange]:
    changes: list[PoolChange] = []
    update: dict[str, Any] = {}
    details = []
    wanted_limit = limit or None
    if limit is not None and pool_obj.concurrency_limit != wanted_limit:
        update["concurrency_limit"] = wanted_limit
        details.append(f"limit {wanted_limit or 'none'}")
    template = pool_obj.base_job_template or {}
    if pool_obj.type != kind:  # a legacy `process` pool (check_pool_types let it pass): limit only
        changes.append(PoolChange(name=pool, action="warning", detail=f"is a {pool_obj.type!r} pool, not {kind!r}; left as it is"))
    else:
        gaps = template_gaps(kind, template) if is_in_container(kind) else []
        has_env = isinstance(template.get("variables", {}).get("properties", {}).get("env"), dict)
        if gaps or not has_env:
            update["base_job_template"] = base_job_template(pool, env, kind)
            details.append(f"job template replaced by JobCloud's (it lacked {', '.join(gaps) or 'env'}); {said}")
        elif pool_settings(template) != env:
            new = with_env(template, env, drop=RETIRED_ENV)
            update["base_job_template"] = with_store_volume(new, env[env_name("storage")]) if kind == "docker" else new
            details.append(said)
        if is_in_container(kind) and not gaps and command_of(template) != IN_CONTAINER_COMMAND:
            changes.append(
                PoolChange(
                    name=pool,
                    action="warning",
                    detail=f"its command is {command_of(template)!r}, not {IN_CONTAINER_COMMAND!r}; left as it is",
                )
            )
    if update:
        client.update_work_pool(pool, update_cls(**update))
        changes.append(PoolChange(name=pool, action="updated", detail="; ".join(details)))
    else:
        changes.append(PoolChange(name=pool, action="unchanged"))
    return changes


def _store_warning(pool: str, kind: str, storage: str) -> list[PoolChange]:
    # A folder is reachable from the worker host (jobcloud) or mounted by JobCloud's docker
    # template; pods and cloud tasks have no such disk.
    if kind in (DEFAULT_POOL_TYPE, LEGACY_POOL_TYPE, "docker") or local_store_path(storage) is None:
        return []
    return [
        PoolChange(
            name=pool,
            action="warning",
            detail=f"job store {storage} is a local folder, which {kind} jobs cannot reach; use s3://, gs:// or block:<name> (JOBCLOUD_STORAGE)",
        )
    ]


def _ensure_queues(client: Any, pool: str) -> list[PoolChange]:

    existing = {q.name: q for q in client.read_work_queues(work_pool_name=pool)}
    changes: list[PoolChange] = []
    # Most urgent first: Prefect shifts lower-priority queues down when a priority is taken.
    for p in sorted(PRIORITIES, reverse=True):
        name, wanted = queue_name(p), prefect_priority(p)
        queue = existing.get(name)
        if queue is None:
            client.create_work_queue(
                name=name,
                work_pool_name=pool,
                priority=wanted,
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
