"""A job's hardware/timeout override reaches an in-container pool's infrastructure as per-run
job variables (deployments/server/submit.override_variables), read from the deployment's own
definition; host-mode pools need none (the flow applies it to the container)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from jobcloud.blocks.errors import ParameterError
from jobcloud.deployments.deploy.sync import catalog_deployments
from jobcloud.deployments.jobs.submit import override_variables
from jobcloud.deployments.pools.resources import deployment_job_variables
from jobcloud.flows.catalog import EntrypointRef, parse_catalog
from jobcloud.flows.request import JobRequest

CATALOG = """
app:
  v1:
    train:
      app: {cmd: ["python3 -m app.train"]}
      handler: {image_url: "registry.example.org/app:1"}
      aws_resources: {hardware: {MEMORY: 2048, VCPU: 2, GPU: 0}, timeout: 600}
"""
REF = EntrypointRef.parse("app/v1/train")


class FakeClient:
    def __init__(self, pool_type: str) -> None:
        self.pool_type = pool_type

    def read_work_pool(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(type=self.pool_type)


def deployment() -> SimpleNamespace:
    spec = catalog_deployments(parse_catalog(CATALOG))[0]
    return SimpleNamespace(work_pool_name="cpu", job_variables=spec.job_variables)


def test_no_override_no_variables() -> None:
    assert override_variables(FakeClient("kubernetes"), REF, deployment(), JobRequest()) == {}


def test_host_mode_pools_take_no_variables() -> None:
    request = JobRequest(hardware={"cpu": 4})
    assert override_variables(FakeClient("jobcloud"), REF, deployment(), request) == {}


def test_an_override_becomes_the_platforms_own_fields() -> None:
    request = JobRequest(hardware={"cpu": 4, "memory": 8192}, timeout=1200)
    got = override_variables(FakeClient("kubernetes"), REF, deployment(), request)
    want = deployment_job_variables("kubernetes", "registry.example.org/app:1", cpu=4, memory_mb=8192, gpus=0, timeout_s=1200)
    assert got == want and got


def test_what_a_platform_cannot_give_is_refused_at_submit() -> None:
    request = JobRequest(hardware={"gpu": 2})
    with pytest.raises(ParameterError, match="Cloud Run gives at most 1 GPU"):
        override_variables(FakeClient("cloud-run-v2"), REF, deployment(), request)
