"""The worker types a JobCloud pool can have, and how a user chooses them.

`jobcloud` (the default) is JobCloud's own process worker: the flow runs on the worker host and
starts the application's container beside it (`jobcloud.deployments.worker.fast_worker`). The others are
Prefect's own worker types; with them the flow runs *inside* the application's image
(in-container mode) and runs the entrypoint's command as a subprocess:

| type           | worker                                   | package (pip)       |
|----------------|------------------------------------------|---------------------|
| `docker`       | prefect_docker.worker.DockerWorker       | prefect-docker      |
| `kubernetes`   | prefect_kubernetes.worker.KubernetesWorker | prefect-kubernetes |
| `ecs`          | prefect_aws.workers.ecs_worker.ECSWorker | prefect-aws         |
| `cloud-run-v2` | prefect_gcp.workers.cloud_run_v2.CloudRunWorkerV2 | prefect-gcp |
| `vertex-ai`    | prefect_gcp.workers.vertex.VertexAIWorker | prefect-gcp        |

A pool's type is chosen per pool with `jobcloud deploy --pool-type cpu=docker` (repeatable) or
the setting JOBCLOUD_POOL_TYPES=`cpu=docker,gpu=kubernetes`; the option wins over the setting
pool by pool, and a pool named by neither is `jobcloud`. The package of a type is only needed
where the type is used (`jobcloud deploy` builds its template from the worker's own default):
a missing one is a `PoolTypeError` naming the `pip install` that fixes it.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from pydantic import BaseModel, ConfigDict

from jobcloud.blocks.errors import UserError

POOLS = ("cpu", "gpu")
DEFAULT_POOL_TYPE = "jobcloud"
# Pools made by JobCloud before the `jobcloud` type: stock process workers still serve them.
LEGACY_POOL_TYPE = "process"


class PoolTypeError(UserError):
    """A pool type that is unknown, not installed here, or not what an existing pool has."""


class PoolType(BaseModel):
    """One worker type a pool can have."""

    model_config = ConfigDict(frozen=True)

    name: str
    package: str  # what `pip install` takes
    module: str  # the module that defines the worker
    worker: str  # the worker class's name in `module`
    in_container: bool  # whether the flow runs inside the application's image


POOL_TYPES: dict[str, PoolType] = {
    t.name: t
    for t in (
        PoolType(
            name="jobcloud",
            package="jobcloud",
            module="jobcloud.deployments.worker.fast_worker",
            worker="JobCloudWorker",
            in_container=False,
        ),
        PoolType(name="docker", package="prefect-docker", module="prefect_docker.worker", worker="DockerWorker", in_container=True),
        PoolType(
            name="kubernetes",
            package="prefect-kubernetes",
            module="prefect_kubernetes.worker",
            worker="KubernetesWorker",
            in_container=True,
        ),
        PoolType(name="ecs", package="prefect-aws", module="prefect_aws.workers.ecs_worker", worker="ECSWorker", in_container=True),
        PoolType(
            name="cloud-run-v2",
            package="prefect-gcp",
            module="prefect_gcp.workers.cloud_run_v2",
            worker="CloudRunWorkerV2",
            in_container=True,
        ),
        PoolType(name="vertex-ai", package="prefect-gcp", module="prefect_gcp.workers.vertex", worker="VertexAIWorker", in_container=True),
    )
}


def known_pool_types() -> str:
    """The names of the pool types, for messages."""
    return ", ".join(POOL_TYPES)


def require_pool_type(name: str) -> PoolType:
    """The pool type ``name``, its worker's package installed here.

    Raises PoolTypeError (a UserError: exit 2) for an unknown name, listing the known ones, and
    for a type whose package is missing, naming the `pip install` that adds it.
    """
    pool_type = POOL_TYPES.get(name)
    if pool_type is None:
        raise PoolTypeError(f"unknown pool type {name!r}; pool types are {known_pool_types()}")
    top = pool_type.module.split(".")[0]
    if importlib.util.find_spec(top) is None:
        raise PoolTypeError(
            f"pool type {name!r} needs the package {pool_type.package}, which is not installed: "
            f"pip install {pool_type.package}  (or choose another type with --pool-type)"
        )
    return pool_type


def worker_class(name: str) -> Any:
    """The worker class of pool type ``name`` (imports its package; see `require_pool_type`)."""
    pool_type = require_pool_type(name)
    return getattr(importlib.import_module(pool_type.module), pool_type.worker)


def is_in_container(name: str) -> bool:
    """Whether a pool of type ``name`` runs the job flow inside the application's image.

    `jobcloud` and the legacy `process` pools run it on the worker host; every other type
    (including ones JobCloud does not know) is taken as in-container.
    """
    return name not in (DEFAULT_POOL_TYPE, LEGACY_POOL_TYPE)


def _pairs(items: list[str], source: str) -> dict[str, str]:
    chosen: dict[str, str] = {}
    for item in items:
        pool, sep, kind = (part.strip() for part in item.partition("="))
        if not sep or not pool or not kind:
            raise PoolTypeError(f"{source} {item!r} is not POOL=TYPE (e.g. cpu=docker); pool types are {known_pool_types()}")
        if pool not in POOLS:
            raise PoolTypeError(f"{source} {item!r}: unknown pool {pool!r}; pools are {', '.join(POOLS)}")
        if kind not in POOL_TYPES:
            raise PoolTypeError(f"{source} {item!r}: unknown pool type {kind!r}; pool types are {known_pool_types()}")
        if pool in chosen and chosen[pool] != kind:
            raise PoolTypeError(f"{source} gives pool {pool!r} two types: {chosen[pool]!r} and {kind!r}")
        chosen[pool] = kind
    return chosen


def parse_pool_types(pairs: list[str], setting: str | None = None, fill: bool = True) -> dict[str, str]:
    """The type of each pool: ``pairs`` (`--pool-type cpu=docker`, repeatable) over ``setting``
    (JOBCLOUD_POOL_TYPES, `cpu=docker,gpu=kubernetes`), pool by pool; `jobcloud` for a pool
    named by neither (``fill``; without it such a pool is left out: `deploy` then keeps an
    existing pool's type).

    Only names are checked here (pools and types); whether a type's package is installed is
    `require_pool_type`'s question, asked when the pools are made.
    """
    from_setting = _pairs([p for p in (setting or "").split(",") if p.strip()], "JOBCLOUD_POOL_TYPES")
    from_option = _pairs(list(pairs), "--pool-type")
    chosen = {pool: from_option.get(pool) or from_setting.get(pool) for pool in POOLS}
    if fill:
        return {pool: kind or DEFAULT_POOL_TYPE for pool, kind in chosen.items()}
    return {pool: kind for pool, kind in chosen.items() if kind}
