"""Render each pool's job template and a deployment's parameters as the worker and the flow
would, and check the GPU request that reaches the container."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from jobcloud.deployments.deploy.sync import catalog_deployments
from jobcloud.deployments.pools.work_pools import base_job_template
from jobcloud.flows.catalog import parse_catalog
from jobcloud.flows.catalog_flows import flow_for
from jobcloud.flows.container_spec import build_spec
from jobcloud.flows.request import JobRequest

CATALOG = """
app:
  v1:
    gpu-train:
      app: {cmd: ["train"]}
      handler: {image_url: img:1}
      aws_resources: {hardware: {GPU: 2}}
    cpu-fit:
      app: {cmd: ["fit"]}
      handler: {image_url: img:1}
"""


class _NoClient:
    """from_template_and_values needs a client only for block references; there are none."""


def _job_configuration(pool: str, job_variables: dict[str, Any]) -> Any:
    from jobcloud.deployments.worker.fast_worker import JobCloudJobConfiguration

    return asyncio.run(JobCloudJobConfiguration.from_template_and_values(base_job_template(pool), job_variables, client=_NoClient()))


def _container_kwargs(spec: Any, catalog: Any, run_params: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    # The server merges run parameters over the deployment's defaults; the flow validates them.
    params = {**spec.parameters, **run_params}
    flow = flow_for(spec.ref, catalog)
    validated = flow.validate_parameters(params)
    request = JobRequest(**{k: v for k, v in validated.items() if v is not None and k != "array"})
    entry = catalog.get(spec.ref)
    return build_spec(spec.ref, entry, request, tmp_path, "job-1").create_kwargs()


@pytest.mark.parametrize(
    ("entrypoint", "pool", "run_params", "gpus"),
    [
        ("gpu-train", "gpu", {}, 2),
        ("gpu-train", "gpu", {"hardware": {"gpu": 1}}, 1),
        ("gpu-train", "gpu", {"hardware": {"memory": 512}}, 2),  # catalog default stays
        ("cpu-fit", "cpu", {}, 0),
        ("cpu-fit", "cpu", {"hardware": {"gpu": 1}}, 1),
    ],
)
def test_gpu_request_reaches_the_container(entrypoint: str, pool: str, run_params: dict, gpus: int, tmp_path: Path) -> None:
    catalog = parse_catalog(CATALOG)
    spec = next(s for s in catalog_deployments(catalog) if s.ref.entrypoint == entrypoint)
    assert spec.work_pool_name == pool
    config = _job_configuration(spec.work_pool_name, spec.job_variables)
    assert config.env["JOBCLOUD_POOL"] == pool
    assert config.command is None  # the stock engine command runs the flow
    kwargs = _container_kwargs(spec, catalog, run_params, tmp_path)
    requests = kwargs.get("device_requests", [])
    if gpus:
        assert [(r["Count"], r["Capabilities"]) for r in requests] == [(gpus, [["gpu"]])]
    else:
        assert requests == []
    if "memory" in run_params.get("hardware", {}):
        assert kwargs["mem_limit"] == 512 * 1024 * 1024


def test_pools_use_the_process_template_with_jobcloud_worker() -> None:
    from prefect.plugins import load_prefect_collections
    from prefect.utilities.dispatch import lookup_type
    from prefect.workers.base import BaseWorker
    from prefect.workers.process import ProcessWorker

    from jobcloud.deployments.pools.work_pools import POOL_TYPE
    from jobcloud.deployments.worker.fast_worker import JobCloudWorker

    load_prefect_collections()  # the entry point `prefect worker start` uses
    assert lookup_type(BaseWorker, POOL_TYPE) is JobCloudWorker
    assert issubclass(JobCloudWorker, ProcessWorker)
    for pool in ("cpu", "gpu"):
        template = base_job_template(pool)
        stock = ProcessWorker.get_default_base_job_template()
        assert template["job_configuration"] == stock["job_configuration"]
        assert template["variables"]["properties"]["env"]["default"] == {"JOBCLOUD_POOL": pool}
