"""End to end through real processes: `prefect server start` (SQLite, free port, own
PREFECT_HOME), `jobcloud deploy`, a real `prefect worker start --pool cpu`, jobs submitted with
`prefect deployment run --watch`, `jobcloud run`, and the Python API; then catalog changes
picked up by `jobcloud deploy --watch --prune`. Every process started here is stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobcloud.deployments.server.processes import PrefectServer, Proc, start_worker
from tests.conftest import ROOT, Cli
from tests.engine_helpers import labelled_containers

pytestmark = pytest.mark.e2e

SLEEPER = """
sleeper:
  v1:
    nap:
      description: Sleeps a minute (to cancel it while it runs).
      app: {cmd: ["sleep 60"]}
      handler: {image_url: "localhost/jobcloud/linefit:1"}
"""
EXTRA = """
extra:
  v1:
    hello:
      description: Added while `deploy --watch` runs.
      app: {cmd: ["echo hello"]}
      handler: {image_url: "localhost/jobcloud/linefit:1"}
"""


class Stack:
    """The running server and worker, and a `jobcloud` runner pointed at them."""

    def __init__(self, server: PrefectServer, worker: Proc, env: dict[str, str], catalog: Path, tmp: Path) -> None:
        self.server, self.worker, self.env, self.catalog, self.tmp = server, worker, env, catalog, tmp
        self.cli = Cli(env=env, cwd=tmp)

    def prefect(self, *args: str, timeout: int = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "prefect", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def client(self) -> Any:
        os.environ["PREFECT_API_URL"] = self.server.api_url
        from tests.prefect_helpers import prefect_client

        return prefect_client(self.server.api_url)


def _ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def stack(engine: str, images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e-server")
    catalog = tmp / "application_config.yaml"
    catalog.write_text((ROOT / "application_config.yaml").read_text() + SLEEPER)
    server = PrefectServer(home=tmp / "prefect-home")
    base = {
        **os.environ,
        "JOBCLOUD_HOME": str(tmp / "jc-home"),
        "JOBCLOUD_STORAGE": str(tmp / "store"),
        "JOBCLOUD_CONFIG": str(catalog),
        "DOCKER_HOST": engine,
        "PYTHONPATH": str(ROOT),
    }
    server.start()
    env = server.env(base)
    worker = None
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "JOBCLOUD_STORAGE", "JOBCLOUD_CONFIG")}
    try:
        cli = Cli(env=env, cwd=tmp)
        _ok(cli("deploy", "--prefect-yaml", str(ROOT / "prefect.yaml")))
        worker = start_worker(server, "cpu", env, tmp / "worker.log", name="e2e-cpu")
        examples = ROOT / "examples/linefit"
        _ok(cli("files", "put", str(examples / "config.yaml"), str(examples / "points.csv"), str(examples / "query.csv"), "examples"))
        os.environ["JOBCLOUD_STORAGE"] = base["JOBCLOUD_STORAGE"]
        os.environ["JOBCLOUD_CONFIG"] = str(catalog)
        yield Stack(server, worker, env, catalog, tmp)
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert not server.proc.alive() and (worker is None or not worker.alive())


def _manifest(stack: Stack, job_id: str) -> dict[str, Any]:
    path = Path(stack.env["JOBCLOUD_STORAGE"]) / "jobs" / job_id / "manifest.json"
    assert path.exists(), f"no manifest for {job_id}; worker log:\n{stack.worker.tail()}"
    return json.loads(path.read_text())


def test_deploy_made_pools_queues_deployments_and_schedule(stack: Stack) -> None:
    again = _ok(stack.cli("deploy", "--json", "--prefect-yaml", str(ROOT / "prefect.yaml")))
    changes = json.loads(again.stdout)["changes"]
    assert {c["action"] for c in changes} == {"unchanged"}, changes  # idempotent
    with stack.client() as client:
        for pool in ("cpu", "gpu"):
            assert client.read_work_pool(pool).type == "jobcloud"
            queues = {q.name: q.priority for q in client.read_work_queues(work_pool_name=pool)}
            assert all(queues[f"priority-{p}"] == 6 - p for p in range(6)), queues
        dep = client.read_deployment_by_name("linefit-train/linefit-v1-train")
        assert dep.work_pool_name == "cpu" and "app:linefit" in dep.tags
        assert dep.parameter_openapi_schema["properties"]["data_ids"]["description"]
        nightly = client.read_deployment_by_name("linefit-train/linefit-v1-train-nightly")
        crons = [s.schedule.cron for s in client.read_deployment_schedules(nightly.id)]
        assert crons == ["0 3 * * *"]
        assert nightly.parameters["config_id"] == "examples/config.yaml"


def test_prefect_deploy_all_agrees_with_jobcloud_deploy(stack: Stack) -> None:
    _ok(stack.prefect("--no-prompt", "deploy", "--all"))
    again = _ok(stack.cli("deploy", "--json", "--prefect-yaml", str(ROOT / "prefect.yaml")))
    changed = [c for c in json.loads(again.stdout)["changes"] if c["action"] != "unchanged"]
    assert changed == []


def test_prefect_deployment_run_watch(stack: Stack) -> None:
    proc = _ok(
        stack.prefect(
            "deployment",
            "run",
            "linefit-train/linefit-v1-train",
            "--param",
            "config_id=examples/config.yaml",
            "--param",
            'data_ids=["examples/points.csv"]',
            "--watch",
        )
    )
    assert "Completed" in proc.stdout
    with stack.client() as client:
        from prefect.client.schemas.sorting import FlowRunSort

        run = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
        assert run.state.is_completed()
        assert {"app:linefit", "version:v1", "entrypoint:train"} <= set(run.tags)
    manifest = _manifest(stack, str(run.id))
    assert manifest["state"] == "Completed"
    assert any(o["key"].endswith("output/metrics.txt") for o in manifest["outputs"])


def test_jobcloud_run_jobs_show_logs_outputs(stack: Stack, tmp_path: Path) -> None:
    proc = _ok(
        stack.cli(
            "run", "linefit/v1/train", "--config", "examples/config.yaml", "--data", "examples/points.csv", "--priority", "3", "--json"
        )
    )
    result = json.loads(proc.stdout)
    job_id = result["id"]
    assert result["state"] == "Completed"
    assert _manifest(stack, job_id)["state"] == "Completed"
    shown = json.loads(_ok(stack.cli("jobs", "show", job_id, "--json")).stdout)
    assert shown["state"] == "Completed" and shown["application"] == "linefit"
    assert shown["manifest"]["timings"]["total_s"] > 0
    with stack.client() as client:
        assert client.read_flow_run(job_id).work_queue_name == "priority-3"
    logs = _ok(stack.cli("jobs", "logs", job_id)).stdout
    assert "trained on rows=6" in logs
    _ok(stack.cli("jobs", "outputs", job_id, str(tmp_path / "out")))
    assert "a=" in (tmp_path / "out/output/metrics.txt").read_text()
    assert (tmp_path / "out/manifest.json").exists()
    assert "warm starts on" in stack.worker.tail(400)  # the JobCloud worker type was picked up


def test_failing_job_is_failed_in_jobs_ls(stack: Stack) -> None:
    # A config that is no .yaml (config is a required input, so it cannot be left out): exit 4.
    proc = stack.cli("run", "linefit/v1/train", "--config", "examples/points.csv", "--data", "examples/points.csv", "--json")
    assert proc.returncode == 1, proc.stderr
    job_id = json.loads(proc.stdout)["id"]
    failed = json.loads(_ok(stack.cli("jobs", "ls", "--state", "failed", "--json")).stdout)["jobs"]
    assert job_id in {j["id"] for j in failed}
    assert all(j["state"] == "Failed" for j in failed)
    listed = json.loads(_ok(stack.cli("jobs", "ls", "--app", "linefit", "--json")).stdout)["jobs"]
    assert {j["state"] for j in listed} >= {"Completed", "Failed"}
    assert _manifest(stack, job_id)["exit_code"] == 4


def test_no_wait_then_cancel_a_running_job(stack: Stack) -> None:

    job_id = _ok(stack.cli("run", "sleeper/v1/nap", "--no-wait")).stdout.strip()
    deadline = time.monotonic() + 90
    while True:
        shown = json.loads(_ok(stack.cli("jobs", "show", job_id, "--json")).stdout)
        if shown["phase"] == "running":
            break
        assert time.monotonic() < deadline, shown
        time.sleep(0.5)
    _ok(stack.cli("jobs", "cancel", job_id))
    deadline = time.monotonic() + 60
    while shown["state"] not in ("Cancelled", "Completed", "Failed", "Crashed"):
        assert time.monotonic() < deadline, shown
        time.sleep(0.5)
        shown = json.loads(_ok(stack.cli("jobs", "show", job_id, "--json")).stdout)
    assert shown["state"] == "Cancelled"
    deadline = time.monotonic() + 30
    while labelled_containers(stack.env["DOCKER_HOST"], f"io.jobcloud.job-id={job_id}"):
        assert time.monotonic() < deadline, "the cancelled job's container is still there"
        time.sleep(0.5)


def test_notebook_example_runs(stack: Stack) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples/notebook.py")], cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "state: Completed" in proc.stdout
    assert "trained on rows=6" in proc.stdout
    assert "," in proc.stdout.strip().splitlines()[-1]  # a predictions.csv row


def test_deploy_watch_picks_catalog_changes_up(stack: Stack) -> None:
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobcloud.deployments.cli",
            "deploy",
            "--watch",
            "--prune",
            "--interval",
            "0.5",
            "--prefect-yaml",
            str(ROOT / "prefect.yaml"),
        ],
        cwd=stack.tmp,
        env=stack.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    original = stack.catalog.read_text()
    try:
        with stack.client() as client:
            from prefect.exceptions import ObjectNotFound

            def exists() -> bool:
                try:
                    client.read_deployment_by_name("extra-hello/extra-v1-hello")
                except ObjectNotFound:
                    return False
                return True

            def wait_until(cond: Any) -> None:
                deadline = time.monotonic() + 60
                while not cond():
                    assert watcher.poll() is None, "deploy --watch exited"
                    assert time.monotonic() < deadline
                    time.sleep(0.3)

            stack.catalog.write_text(original + EXTRA)
            wait_until(exists)
            stack.catalog.write_text(original)
            wait_until(lambda: not exists())
    finally:
        stack.catalog.write_text(original)
        Proc(watcher, stack.tmp / "none.log").stop()
