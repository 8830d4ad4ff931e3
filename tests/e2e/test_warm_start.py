"""A worker host needs nothing but `prefect worker start --pool cpu`, and its runs start warm.

Real processes: `prefect server start`, `jobcloud deploy` with the deployer's settings (job
store, catalog), then the bare `prefect worker start --pool cpu` with NO JOBCLOUD_* (and no
PREFECT_WORKER_QUERY_SECONDS) in its environment. A job runs to Completed, its outputs land in
the store the pool names, it is picked up within the JobCloud worker's 1 s poll, and its flow
run went through the fork server: the fork server marks the run, and while the job runs the
flow run's process is a child of the fork server (forked, not a new interpreter), which is a
child of the worker. A cold fallback (the client execs `python -m prefect.engine` on any
error) fails each of these."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from jobcloud.deployments.server.processes import PrefectServer, Proc, start_worker
from jobcloud.flows.catalog import EntrypointRef
from jobcloud.flows.catalog_flows import entrypoint_of
from tests.conftest import JOBCLOUD
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

CATALOG = """
warm:
  v1:
    nap:
      description: Naps a few seconds, long enough to look at its flow run's process.
      app: {cmd: ["echo start; sleep 5; echo done > /files/output/done.txt; echo end"]}
      handler: {image_url: "localhost/jobcloud/busybox:1", files_up: {output: output}}
"""
REF = EntrypointRef(application="warm", version="v1", entrypoint="nap")


def ppid(pid: int) -> int:
    """The parent of ``pid`` (from /proc: the field after the command's closing parenthesis)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")


def bare_host_env(engine: str, home: Path) -> dict[str, str]:
    """A worker host's environment: nothing of JobCloud's, Prefect's poll interval unset, its own
    HOME; DOCKER_HOST only where the engine is not the host's default socket."""
    from jobcloud.blocks.engine import engine_url

    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBCLOUD_", "PREFECT_")) and k != "PYTHONPATH"}
    env["HOME"] = str(home)
    env.pop("DOCKER_HOST", None)
    saved = os.environ.pop("DOCKER_HOST", None)
    try:
        found = engine_url()  # what the host finds by itself
    finally:
        if saved is not None:
            os.environ["DOCKER_HOST"] = saved
    if found != engine:
        env["DOCKER_HOST"] = engine
    return env


def test_a_bare_worker_runs_a_job_warm_with_the_pools_settings(engine: str, images: None, tmp_path: Path) -> None:
    catalog = tmp_path / "deployer" / "application_config.yaml"
    catalog.parent.mkdir()
    catalog.write_text(CATALOG)
    store = tmp_path / "store"
    server = PrefectServer(home=tmp_path / "prefect-home")
    server.start()
    worker: Proc | None = None
    try:
        # The deployer: its settings are the only place the job store and catalog are named.
        deployer = server.env(
            {
                **{k: v for k, v in os.environ.items() if not k.startswith("JOBCLOUD_")},
                "JOBCLOUD_HOME": str(tmp_path / "deployer-home"),
                "JOBCLOUD_STORAGE": str(store),
                "JOBCLOUD_CONFIG": str(catalog),
                "DOCKER_HOST": engine,
            }
        )
        deploy = subprocess.run(
            [*JOBCLOUD, "deploy", "--prefect-yaml", str(tmp_path / "none.yaml")],
            env=deployer,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr

        from tests.prefect_helpers import prefect_client

        with prefect_client(server.api_url) as client:
            pool = client.read_work_pool("cpu")
            defaults = pool.base_job_template["variables"]["properties"]["env"]["default"]
            # The pool names the store; the entrypoint travels in its deployment, not as a path.
            assert defaults == {"JOBCLOUD_POOL": "cpu", "JOBCLOUD_STORAGE": str(store)}
            catalog.unlink()  # no catalog file anywhere when the job runs

            # The worker host: `prefect worker start --pool cpu`, nothing else.
            host_home = tmp_path / "worker-home"
            host_home.mkdir()
            env = bare_host_env(engine, host_home)
            worker = start_worker(server, "cpu", env, tmp_path / "worker.log", fast=False)
            assert [a for a in worker.popen.args if a.startswith("--")] == ["--pool"]
            wenv = Path(f"/proc/{worker.popen.pid}/environ").read_bytes().split(b"\0")
            assert not [e for e in wenv if e.startswith((b"JOBCLOUD_", b"PREFECT_WORKER_QUERY_SECONDS="))]

            warm = wait_until(
                lambda: re.search(r"warm starts on: fork server (\S+) \(pid (\d+)\)", worker.tail(200)),
                90,
                interval=0.1,
                message=lambda: f"the fork server to start:\n{worker.tail()}",
            )
            fork_sock, fork_pid = warm.group(1), int(warm.group(2))
            assert ppid(fork_pid) == worker.popen.pid
            assert "asks for work every 1 s" in worker.tail(200)
            # The server has recorded a poll of the deployment's queue by the worker: what follows
            # measures the poll interval, not the worker's start.
            deployment = next(d for d in client.read_deployments() if d.entrypoint == entrypoint_of(REF))
            wait_until(
                lambda: client.read_work_queue_by_name(deployment.work_queue_name, work_pool_name="cpu").last_polled,
                60,
                interval=0.1,
                message=lambda: f"the worker's first poll of queue {deployment.work_queue_name!r}:\n{worker.tail()}",
            )
            t0 = time.monotonic()
            run = client.create_flow_run_from_deployment(deployment.id)
            run_id = str(run.id)

            # The fork server's mark of this run, then the run's process: its child, forked.
            fork_log = Path(fork_sock).parent / "warm_start.log"
            mark = wait_until(
                lambda: fork_log.exists() and re.search(rf"warm_start: flow run {run_id} forked as pid (\d+)", fork_log.read_text()),
                30,
                interval=0.1,
                message=lambda: f"the fork server to start flow run {run_id}; worker log:\n{worker.tail()}",
            )
            picked_up = time.monotonic() - t0
            child = int(mark.group(1))
            assert ppid(child) == fork_pid, "the flow run's process is not the fork server's child"
            assert "--serve" in cmdline(child), "the flow run's process is a new interpreter, not a fork"
            assert picked_up < 5, f"picked up after {picked_up:.1f} s (a 1 s poll should take about 1 s)"

            def final() -> Any:
                r = client.read_flow_run(run.id)
                return r if r.state and r.state.is_final() else None

            done = wait_until(final, 180, interval=0.1, message=lambda: f"flow run {run_id} to end; worker log:\n{worker.tail()}")
            assert done.state.is_completed(), f"{done.state.name}: {done.state.message}\n{worker.tail()}"

        # The outputs are in the store the pool names; the host's own default store is untouched.
        assert (store / "jobs" / run_id / "output" / "done.txt").read_text().strip() == "done"
        manifest = json.loads((store / "jobs" / run_id / "manifest.json").read_text())
        assert manifest["definition"] == "deployment" and manifest["runner"] == "engine"
        assert not (host_home / ".jobcloud" / "store").exists()
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
    assert not Path(fork_sock).parent.exists(), "the fork server left its folder behind"
