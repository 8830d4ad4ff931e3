"""Pools of Prefect's own worker types: JobCloud's templates rendered offline by each upstream
worker's own job configuration class (no cluster), for a CPU and a GPU entrypoint; the job
variables validated against the pool's schema; the choices and the refusals."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from unittest.mock import MagicMock, patch

import jsonschema
import pytest
from prefect.client.schemas.objects import FlowRun

from jobcloud.blocks.errors import UserError
from jobcloud.deployments.pools.resources import check_infra, deployment_job_variables
from jobcloud.deployments.pools.templates import IN_CONTAINER_COMMAND
from jobcloud.deployments.pools.types import (
    PoolTypeError,
    parse_pool_types,
    require_pool_type,
    worker_class,
)
from jobcloud.deployments.pools.work_pools import (
    base_job_template,
    ensure_pools,
    pool_env,
    pool_type_of,
)
from tests.unit.test_pool_settings import FakePools

IMAGE = "localhost/jobcloud/torchfit:1"
ARGV = ["/opt/jobcloud/venv/bin/python", "-m", "prefect.engine"]
CPU_JOB = dict(cpu=2, memory_mb=3000, gpus=0, timeout_s=3600)
GPU_JOB = dict(cpu=2, memory_mb=3000, gpus=1, timeout_s=3600)
EXTRA = {"vertex-ai": {"region": "us-central1"}}  # upstream has no default region


class NoClient:
    """Prefect's client where none may be used: the templates hold no block or variable references."""


@pytest.fixture(autouse=True)
def store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCLOUD_STORAGE", "s3://lab/jobs")
    monkeypatch.delenv("JOBCLOUD_POOL_TYPES", raising=False)


@pytest.fixture(autouse=True)
def gcp_credentials() -> Any:
    # As prefect-gcp's own tests do: GCP configurations ask google.auth for the project.
    creds = MagicMock(service_account_email="jobs@lab.iam.gserviceaccount.com")
    with patch("google.auth.default", return_value=(creds, "lab-project")):
        yield


def render(pool_type: str, pool: str, job: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The job variables of ``job`` and the job configuration the worker would run them with."""
    template = base_job_template(pool, pool_env(pool, pool_type=pool_type), pool_type)
    values = {**deployment_job_variables(pool_type, IMAGE, **job), **EXTRA.get(pool_type, {})}
    # The pool's schema accepts them (Prefect's server validates deployments' job variables so).
    jsonschema.validate(values, template["variables"])
    config_cls = worker_class(pool_type).job_configuration
    config = asyncio.run(config_cls.from_template_and_values(template, values, client=NoClient()))
    config.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), name="job-1", flow_id=uuid.uuid4()))
    return values, config


def env_of(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e["value"] for e in pairs}


def assert_jobcloud_env(env: dict[str, Any], pool: str) -> None:
    assert env["JOBCLOUD_RUNNER"] == "process"
    assert env["JOBCLOUD_WATCH_CANCEL"] == "1"
    assert env["JOBCLOUD_STORAGE"] == "s3://lab/jobs"
    assert env["JOBCLOUD_POOL"] == pool
    assert "JOBCLOUD_CONFIG" not in env


@pytest.mark.parametrize("pool,job", [("cpu", CPU_JOB), ("gpu", GPU_JOB)])
def test_kubernetes(pool: str, job: dict[str, Any]) -> None:
    _, config = render("kubernetes", pool, job)
    spec = config.job_manifest["spec"]
    container = spec["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE
    assert container["args"] == ARGV
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "3000Mi"}
    limits = {"cpu": "2", "memory": "3000Mi", **({"nvidia.com/gpu": 1} if job["gpus"] else {})}
    assert container["resources"]["limits"] == limits
    assert spec["activeDeadlineSeconds"] == 3600 + 900
    assert_jobcloud_env(env_of(container["env"]), pool)
    assert config.pod_watch_timeout_seconds == 900


@pytest.mark.parametrize("pool,job", [("cpu", CPU_JOB), ("gpu", GPU_JOB)])
def test_ecs(pool: str, job: dict[str, Any]) -> None:
    _, config = render("ecs", pool, job)
    container = config.task_definition["containerDefinitions"][0]
    request = config.task_run_request
    assert container["image"] == IMAGE
    assert request["overrides"]["containerOverrides"][0]["command"] == IN_CONTAINER_COMMAND
    assert_jobcloud_env(request["overrides"]["containerOverrides"][0]["environment"], pool)
    if job["gpus"]:
        assert request["launchType"] == "EC2"
        assert container["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
        assert (config.task_definition["cpu"], config.task_definition["memory"]) == (2048, 3000)
    else:
        assert request["launchType"] == "FARGATE"
        assert "resourceRequirements" not in container or not container["resourceRequirements"]
        # 2 vCPU on Fargate takes at least 4096 MiB.
        assert (config.task_definition["cpu"], config.task_definition["memory"]) == (2048, 4096)


@pytest.mark.parametrize("pool,job", [("cpu", CPU_JOB), ("gpu", GPU_JOB)])
def test_cloud_run_v2(pool: str, job: dict[str, Any]) -> None:
    _, config = render("cloud-run-v2", pool, job)
    task = config.job_body["template"]["template"]
    container = task["containers"][0]
    assert container["image"] == IMAGE
    assert container["command"] == ARGV
    assert task["timeout"] == f"{3600 + 900}s"
    if job["gpus"]:
        # A GPU takes at least 4 CPUs and 16 GiB on Cloud Run.
        assert container["resources"]["limits"] == {"cpu": "4", "memory": "16384Mi", "nvidia.com/gpu": "1"}
        assert task["nodeSelector"] == {"accelerator": "nvidia-l4"}
    else:
        assert container["resources"]["limits"] == {"cpu": "2", "memory": "3000Mi"}
        assert "nodeSelector" not in task
    assert_jobcloud_env(env_of(container["env"]), pool)


@pytest.mark.parametrize("pool,job", [("cpu", CPU_JOB), ("gpu", GPU_JOB)])
def test_vertex_ai(pool: str, job: dict[str, Any]) -> None:
    _, config = render("vertex-ai", pool, job)
    spec = config.job_spec
    worker = spec["worker_pool_specs"][0]
    assert worker["container_spec"]["image_uri"] == IMAGE
    assert worker["container_spec"]["command"] == ARGV
    assert spec["maximum_run_time_hours"] == 2  # 3600 s + grace, in whole hours
    machine = {"machine_type": "n1-highmem-2"}
    if job["gpus"]:
        machine |= {"accelerator_type": "NVIDIA_TESLA_T4", "accelerator_count": 1}
    assert worker["machine_spec"] == machine
    assert_jobcloud_env(env_of(worker["container_spec"]["env"]), pool)


@pytest.mark.parametrize("pool,job", [("cpu", CPU_JOB), ("gpu", GPU_JOB)])
def test_docker(pool: str, job: dict[str, Any]) -> None:
    _, config = render("docker", pool, job)
    assert config.image == IMAGE
    assert config.command == IN_CONTAINER_COMMAND
    assert config.image_pull_policy == "Never"
    assert config.network_mode == "host"
    assert config.mem_limit == "3000m"
    # init: the engine's init as PID 1 forwards a stop's SIGTERM before the flow has a handler.
    kwargs = {
        "init": True,
        "nano_cpus": 2_000_000_000,
        **({"device_requests": [{"count": 1, "capabilities": [["gpu"]]}]} if job["gpus"] else {}),
    }
    assert config.container_create_kwargs == kwargs
    assert_jobcloud_env(config.env, pool)


def test_a_docker_pool_mounts_a_local_folder_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("JOBCLOUD_STORAGE", str(tmp_path))
    template = base_job_template("cpu", pool_env("cpu", pool_type="docker"), "docker")
    assert template["variables"]["properties"]["volumes"]["default"] == [f"{tmp_path}:{tmp_path}"]


def test_upstream_defaults_that_are_too_short_are_raised() -> None:
    def props(pool_type: str) -> dict:
        return base_job_template("cpu", {}, pool_type)["variables"]["properties"]

    assert props("cloud-run-v2")["timeout"]["default"] == 86400
    assert props("vertex-ai")["maximum_run_time_hours"]["default"] == 168
    assert props("kubernetes")["pod_watch_timeout_seconds"]["default"] == 900
    for kind in ("kubernetes", "ecs", "cloud-run-v2", "vertex-ai", "docker"):
        assert props(kind)["command"]["default"] == IN_CONTAINER_COMMAND


def test_jobcloud_pools_get_no_job_variables() -> None:
    assert deployment_job_variables("jobcloud", IMAGE, **GPU_JOB) == {}
    assert deployment_job_variables("process", IMAGE, **GPU_JOB) == {}


def test_a_docker_image_from_a_registry_is_pulled_as_the_pool_says() -> None:
    # The whole variables, not only the missing pull policy: an empty dict would lose the image.
    assert deployment_job_variables("docker", "ghcr.io/lab/app:1") == {
        "image": "ghcr.io/lab/app:1",
        "container_create_kwargs": {"init": True},
    }
    # Only an image of the worker's own engine is never pulled.
    assert deployment_job_variables("docker", IMAGE) == {
        "image": IMAGE,
        "image_pull_policy": "Never",
        "container_create_kwargs": {"init": True},
    }


def test_pool_types_come_from_the_option_over_the_setting() -> None:
    assert parse_pool_types([], None) == {"cpu": "jobcloud", "gpu": "jobcloud"}
    assert parse_pool_types([], "cpu=docker,gpu=kubernetes") == {"cpu": "docker", "gpu": "kubernetes"}
    assert parse_pool_types(["gpu=vertex-ai"], "cpu=docker,gpu=kubernetes") == {"cpu": "docker", "gpu": "vertex-ai"}


@pytest.mark.parametrize(
    "pairs,setting,words",
    [
        (["cpu"], None, "is not POOL=TYPE"),
        (["tpu=docker"], None, "unknown pool 'tpu'"),
        (["cpu=nomad"], None, "unknown pool type 'nomad'; pool types are jobcloud, docker, kubernetes, ecs, cloud-run-v2, vertex-ai"),
        (["cpu=docker", "cpu=ecs"], None, "two types"),
        ([], "cpu:docker", "JOBCLOUD_POOL_TYPES 'cpu:docker' is not POOL=TYPE"),
    ],
)
def test_bad_pool_types_are_user_errors(pairs: list[str], setting: str | None, words: str) -> None:
    with pytest.raises(UserError, match=words):
        parse_pool_types(pairs, setting)


def test_a_missing_package_names_its_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "prefect_kubernetes" else real(name, *a))
    with pytest.raises(PoolTypeError, match="pip install prefect-kubernetes"):
        require_pool_type("kubernetes")
    with pytest.raises(PoolTypeError, match="pip install prefect-kubernetes"):
        ensure_pools(FakePools(), pool_types={"cpu": "jobcloud", "gpu": "kubernetes"})
    with pytest.raises(PoolTypeError, match="unknown pool type 'nomad'"):
        require_pool_type("nomad")


@pytest.mark.parametrize(
    "pool_type,job,words",
    [
        ("cloud-run-v2", dict(gpus=2), "at most 1 GPU"),
        ("cloud-run-v2", dict(timeout_s=2 * 86400), "at most 24 h"),
        ("cloud-run-v2", dict(cpu=16), "at most 8 CPUs"),
        ("cloud-run-v2", dict(memory_mb=64 * 1024), "at most 32768 MB"),
        ("vertex-ai", dict(timeout_s=8 * 86400), "at most 7 days"),
        ("vertex-ai", dict(gpus=16), "at most 8 GPUs"),
        ("vertex-ai", dict(cpu=200), "no Vertex AI n1 machine"),
        ("ecs", dict(cpu=32), "Fargate gives a task at most 16 vCPU"),
        ("ecs", dict(gpus=9), "at most 8 GPUs"),
    ],
)
def test_what_a_platform_cannot_give_is_refused(pool_type: str, job: dict[str, Any], words: str) -> None:
    problems = check_infra(pool_type, **job)
    assert len(problems) == 1 and words in problems[0]


def test_what_platforms_can_give_passes() -> None:
    for kind in ("jobcloud", "docker", "kubernetes", "ecs", "cloud-run-v2", "vertex-ai"):
        assert check_infra(kind, gpus=1, timeout_s=86400, cpu=4, memory_mb=16384) == []
    assert check_infra("kubernetes", gpus=64, timeout_s=30 * 86400, cpu=256, memory_mb=10**7) == []


def test_deploy_makes_each_pool_of_its_type_and_refuses_a_mismatch_before_writing() -> None:
    client = FakePools()
    changes = ensure_pools(client, pool_types={"cpu": "docker", "gpu": "kubernetes"})
    assert {c.name: c.action for c in changes if "/" not in c.name} == {"cpu": "created", "gpu": "created"}
    assert (client.pools["cpu"].type, client.pools["gpu"].type) == ("docker", "kubernetes")
    assert pool_type_of(client, "gpu") == "kubernetes"
    assert pool_type_of(client, "nope") is None
    again = ensure_pools(client, pool_types={"cpu": "docker", "gpu": "kubernetes"})
    assert {c.name: c.action for c in again if "/" not in c.name} == {"cpu": "unchanged", "gpu": "unchanged"}

    fresh = FakePools()
    fresh.pools["gpu"] = type("Pool", (), {"type": "ecs", "base_job_template": {}, "concurrency_limit": None})()
    with pytest.raises(PoolTypeError) as err:
        ensure_pools(fresh, pool_types={"cpu": "docker", "gpu": "kubernetes"})
    assert "prefect work-pool delete gpu" in str(err.value) and "--pool-type gpu=ecs" in str(err.value)
    assert list(fresh.pools) == ["gpu"] and fresh.queues == {}  # nothing written, not even pool cpu


def test_a_pool_of_the_right_type_but_upstreams_template_gets_jobclouds() -> None:
    client = FakePools()
    stock = worker_class("kubernetes").get_default_base_job_template()
    client.pools["gpu"] = type("Pool", (), {"type": "kubernetes", "base_job_template": stock, "concurrency_limit": None})()
    changes = ensure_pools(client, pool_types={"cpu": "jobcloud", "gpu": "kubernetes"})
    gpu = next(c for c in changes if c.name == "gpu")
    assert gpu.action == "updated" and "gpu_limit" in gpu.detail
    assert "gpu_limit" in client.pools["gpu"].base_job_template["variables"]["properties"]


def test_a_local_store_is_a_warning_for_cluster_pools(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("JOBCLOUD_STORAGE", str(tmp_path))
    changes = ensure_pools(FakePools(), pool_types={"cpu": "docker", "gpu": "kubernetes"})
    warnings = [c for c in changes if c.action == "warning"]
    assert [c.name for c in warnings] == ["gpu"] and "local folder" in warnings[0].detail
