"""The built-in deployments of GA4GH TES tasks (docs/tes.md): flow `tes-task`, deployment
`tes-v1-task` on the `cpu` pool and `tes-v1-task-gpu` on the `gpu` pool, entrypoint
`jobcloud.flows.tes_task.tes_task`. `jobcloud deploy` makes them beside the catalog's, on pools of
JobCloud's own worker type only: a task's executors each start a container of their own image,
which the in-container pool types (kubernetes, ecs, ...) cannot do from inside one image.
"""

from __future__ import annotations

from typing import Any

from jobcloud.deployments.deploy.sync import MANAGED_TAG, DeploymentSpec
from jobcloud.deployments.pools.types import DEFAULT_POOL_TYPE
from jobcloud.deployments.pools.work_pools import DEFAULT_PRIORITY, queue_name
from jobcloud.flows.catalog import EntrypointRef
from jobcloud.flows.tes_plan import TES_APPLICATION, TES_DEPLOYMENTS, TES_ENTRYPOINT, TES_FLOW_NAME, TES_TAG, TES_VERSION

ENTRYPOINT = "jobcloud.flows.tes_task.tes_task"


def _schema() -> dict[str, Any]:
    from prefect.utilities.callables import parameter_schema

    from jobcloud.flows.tes_task import tes_task

    return parameter_schema(tes_task).model_dump(mode="json", exclude_unset=True)


def tes_deployments(pool_types: dict[str, str]) -> list[DeploymentSpec]:
    """The TES deployments for the pools of JobCloud's worker type (``pool_types``: pool -> type)."""
    ref = EntrypointRef(application=TES_APPLICATION, version=TES_VERSION, entrypoint=TES_ENTRYPOINT)
    specs = []
    for pool, name in TES_DEPLOYMENTS.items():
        if pool_types.get(pool, DEFAULT_POOL_TYPE) != DEFAULT_POOL_TYPE:
            continue
        specs.append(
            DeploymentSpec(
                flow_name=TES_FLOW_NAME,
                name=name,
                ref=ref,
                entrypoint=ENTRYPOINT,
                work_pool_name=pool,
                work_queue_name=queue_name(DEFAULT_PRIORITY),
                description=f"GA4GH TES v1.1 tasks on the {pool} pool (POST /ga4gh/tes/v1/tasks)",
                # `app:tes`, `version:v1`, `entrypoint:task`: a task is a job like any other (listed
                # with the jobs, notified by the automations that match `app:*`).
                tags=[MANAGED_TAG, TES_TAG, *ref.tags],
                parameter_openapi_schema=_schema(),
            )
        )
    return specs
