"""The work pools carry the flow runs' JobCloud settings (job store, pool name), so a worker
host needs only `prefect worker start --pool cpu`: what `jobcloud deploy` writes into the
pools' job templates, how it updates them, and what a flow run's environment then is."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect.exceptions import ObjectNotFound

from jobcloud.deployments.pools.work_pools import (
    POOL_TYPE,
    base_job_template,
    ensure_pools,
    pool_env,
    pool_settings,
)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The deployer's environment: relative paths, from ``tmp_path``."""
    for name in ("JOBCLOUD_STORAGE", "JOBCLOUD_CONFIG", "JOBCLOUD_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOBCLOUD_HOME", str(tmp_path / "home"))
    return tmp_path


def test_the_pool_gets_the_deployers_store_made_absolute_and_no_catalog(settings: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCLOUD_STORAGE", "store")
    monkeypatch.setenv("JOBCLOUD_CONFIG", "catalog.yaml")
    # The entrypoint travels with the deployment (JOBCLOUD_ENTRYPOINT), not the catalog's path.
    assert pool_env("cpu") == {"JOBCLOUD_POOL": "cpu", "JOBCLOUD_STORAGE": str(settings / "store")}
    assert pool_env("gpu", catalog_path="other.yaml") == {"JOBCLOUD_POOL": "gpu", "JOBCLOUD_STORAGE": str(settings / "store")}
    assert pool_env("cpu", pool_type="kubernetes") == {
        "JOBCLOUD_POOL": "cpu",
        "JOBCLOUD_STORAGE": str(settings / "store"),
        "JOBCLOUD_RUNNER": "process",
        "JOBCLOUD_WATCH_CANCEL": "1",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",  # the zombie automation hears in-container runs too
    }


@pytest.mark.parametrize("url", ["s3://lab/jobcloud", "gs://lab/jobs", "block:lab-store", "file:///srv/store"])
def test_urls_and_blocks_go_into_the_pool_as_they_are(settings: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("JOBCLOUD_STORAGE", url)
    assert pool_env("cpu")["JOBCLOUD_STORAGE"] == url


def test_without_settings_the_pool_gets_the_default_store(settings: Path) -> None:
    env = pool_env("cpu")
    assert env["JOBCLOUD_STORAGE"] == str(settings / "home" / "store")


class FakePools:
    """The work-pool calls of a Prefect client, kept in memory."""

    def __init__(self) -> None:
        self.pools: dict[str, Any] = {}
        self.queues: dict[str, list[Any]] = {}

    def read_work_pool(self, name: str) -> Any:
        if name not in self.pools:
            raise ObjectNotFound(None)
        return self.pools[name]

    def create_work_pool(self, create: Any) -> None:
        self.pools[create.name] = type("Pool", (), dict(create.model_dump()))()

    def update_work_pool(self, name: str, update: Any) -> None:
        for k, v in update.model_dump(exclude_unset=True).items():
            setattr(self.pools[name], k, v)

    def read_work_queues(self, work_pool_name: str) -> list[Any]:
        return self.queues.setdefault(work_pool_name, [])

    def create_work_queue(self, name: str, work_pool_name: str, priority: int, description: str) -> None:
        self.queues.setdefault(work_pool_name, []).append(type("Q", (), {"name": name, "priority": priority, "id": uuid.uuid4()})())

    def update_work_queue(self, qid: Any, priority: int) -> None:
        raise AssertionError("not expected here")


def _pool_changes(changes: list[Any]) -> dict[str, str]:
    return {c.name: c.action for c in changes if "/" not in c.name}


def test_deploy_writes_the_settings_into_new_pools_then_updates_only_what_changed(settings: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCLOUD_STORAGE", "s3://lab/jobcloud")
    monkeypatch.setenv("JOBCLOUD_CONFIG", "/srv/jobcloud/application_config.yaml")
    client = FakePools()
    assert _pool_changes(ensure_pools(client)) == {"cpu": "created", "gpu": "created"}
    for pool in ("cpu", "gpu"):
        assert client.pools[pool].type == POOL_TYPE
        assert pool_settings(client.pools[pool].base_job_template) == {
            "JOBCLOUD_POOL": pool,
            "JOBCLOUD_STORAGE": "s3://lab/jobcloud",
        }
    assert _pool_changes(ensure_pools(client)) == {"cpu": "unchanged", "gpu": "unchanged"}  # idempotent

    # Someone added a variable of their own in the UI; then the store moves.
    template = client.pools["cpu"].base_job_template
    template["variables"]["properties"]["env"]["default"]["HTTPS_PROXY"] = "http://proxy:3128"
    template["variables"]["properties"]["working_dir"]["default"] = "/scratch"
    monkeypatch.setenv("JOBCLOUD_STORAGE", "block:lab-store")
    changes = ensure_pools(client)
    assert _pool_changes(changes) == {"cpu": "updated", "gpu": "updated"}
    assert any("store block:lab-store" in c.detail for c in changes)
    after = client.pools["cpu"].base_job_template
    assert after["variables"]["properties"]["env"]["default"]["JOBCLOUD_STORAGE"] == "block:lab-store"
    assert after["variables"]["properties"]["env"]["default"]["HTTPS_PROXY"] == "http://proxy:3128"
    assert after["variables"]["properties"]["working_dir"]["default"] == "/scratch"


def test_an_old_pools_catalog_path_is_read_without_error_and_removed_on_update(settings: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCLOUD_STORAGE", "s3://lab/jobcloud")
    client = FakePools()
    ensure_pools(client)
    old = client.pools["cpu"].base_job_template
    old["variables"]["properties"]["env"]["default"]["JOBCLOUD_CONFIG"] = "/srv/jobcloud/application_config.yaml"
    assert pool_settings(old)["JOBCLOUD_CONFIG"] == "/srv/jobcloud/application_config.yaml"
    assert _pool_changes(ensure_pools(client)) == {"cpu": "updated", "gpu": "unchanged"}
    assert "JOBCLOUD_CONFIG" not in client.pools["cpu"].base_job_template["variables"]["properties"]["env"]["default"]
    assert _pool_changes(ensure_pools(client)) == {"cpu": "unchanged", "gpu": "unchanged"}


def test_a_stock_process_pool_is_left_as_it_is(settings: Path) -> None:
    client = FakePools()
    client.pools["cpu"] = type("Pool", (), {"type": "process", "base_job_template": {"x": 1}, "concurrency_limit": None})()
    changes = ensure_pools(client)
    assert [c.action for c in changes if c.name == "cpu"] == ["warning", "unchanged"]
    assert client.pools["cpu"].base_job_template == {"x": 1}


def test_a_flow_runs_environment_takes_the_pool_settings_over_the_hosts(settings: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobcloud.deployments.worker.fast_worker import JobCloudJobConfiguration

    class NoClient:
        async def read_block_document_by_name(self, *a: object, **k: object) -> None:
            raise AssertionError("no blocks here")

    template = base_job_template("cpu", {"JOBCLOUD_STORAGE": "s3://lab/jobcloud", "JOBCLOUD_CONFIG": "/srv/c.yaml"})
    monkeypatch.setenv("JOBCLOUD_STORAGE", "/somewhere/on/this/host")  # a host's leftover setting
    monkeypatch.setenv("DOCKER_HOST", "unix:///host/docker.sock")  # per host, not in the pool

    def env(job_variables: dict[str, Any]) -> dict[str, Any]:
        config = asyncio.run(JobCloudJobConfiguration.from_template_and_values(template, job_variables, client=NoClient()))
        config.prepare_for_flow_run(type("Run", (), {"id": uuid.uuid4(), "name": "r"})())
        return config.env

    got = env({})
    assert (got["JOBCLOUD_STORAGE"], got["JOBCLOUD_CONFIG"], got["JOBCLOUD_POOL"]) == ("s3://lab/jobcloud", "/srv/c.yaml", "cpu")
    assert got["DOCKER_HOST"] == "unix:///host/docker.sock"
    # A deployment's `env` job variable goes over the pool's, key by key.
    got = env({"env": {"JOBCLOUD_STORAGE": "s3://other/x"}})
    assert (got["JOBCLOUD_STORAGE"], got["JOBCLOUD_CONFIG"]) == ("s3://other/x", "/srv/c.yaml")
