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

Priorities: a job's priority 0-5 (DECODE's; 5 is the most urgent, 0 the default) picks queue
`priority-<n>` of the pool. Prefect serves the queue with the lowest priority *number* first,
so `priority-5` gets Prefect priority 1 and `priority-0` Prefect priority 6.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from blocks.errors import ParameterError

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


def base_job_template(pool: str) -> dict[str, Any]:
    """The pool's job template: the process worker's, with a JOBCLOUD_POOL variable.

    The flow run's environment is the worker's (JOBCLOUD_STORAGE, JOBCLOUD_CONFIG, DOCKER_HOST)
    plus `env` from this template and the deployment's job variables.
    """
    from deployments.worker.fast_worker import JobCloudWorker

    template = JobCloudWorker.get_default_base_job_template()
    env = template["variables"]["properties"]["env"]
    env["default"] = {"JOBCLOUD_POOL": pool}
    return template


class PoolChange(BaseModel):
    """What `ensure_pools` did to one pool or queue."""

    name: str
    action: str  # created | updated | unchanged | warning
    detail: str = ""


def ensure_pools(client: Any, limits: dict[str, int | None] | None = None) -> list[PoolChange]:
    """Create pools `cpu`/`gpu` and their queues if missing; apply concurrency limits given.

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
        try:
            existing = client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(
                    name=pool,
                    type=POOL_TYPE,
                    description=POOL_DESCRIPTIONS[pool],
                    base_job_template=base_job_template(pool),
                    concurrency_limit=limit or None,
                )
            )
            changes.append(PoolChange(name=pool, action="created", detail=f"limit {limit or 'none'}"))
        else:
            if existing.type != POOL_TYPE:
                changes.append(
                    PoolChange(name=pool, action="warning", detail=f"is a {existing.type!r} pool, not {POOL_TYPE!r}; left as it is")
                )
            wanted = limit or None
            if limit is not None and existing.concurrency_limit != wanted:
                client.update_work_pool(pool, WorkPoolUpdate(concurrency_limit=wanted))
                changes.append(PoolChange(name=pool, action="updated", detail=f"limit {wanted or 'none'}"))
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
