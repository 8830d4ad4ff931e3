"""The fork server behind the JobCloud worker: a run started through it gets the client's
environment, folder, stdio and arguments, its exit code, and its signals; without a server
the client becomes the stock engine command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    sock = str(tmp_path / "fork.sock")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployments.worker.warm_start", "--serve", sock, "tests.unit.warm_probe"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not os.path.exists(sock):
        assert proc.poll() is None and time.monotonic() < deadline, "fork server did not start"
        time.sleep(0.1)
    yield sock
    proc.terminate()
    assert proc.wait(10) is not None
    assert not os.path.exists(sock)


def _client(sock: str | None, cwd: Path, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROBE_VALUE": "from-client"}
    env.pop("JOBCLOUD_WARM_SOCKET", None)
    if sock:
        env["JOBCLOUD_WARM_SOCKET"] = sock
    return subprocess.Popen(
        [sys.executable, "-m", "deployments.worker.warm_start", *args], env=env, cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
    )


def test_run_gets_env_cwd_args_stdio_and_exit_code(server: str, tmp_path: Path) -> None:
    proc = _client(server, tmp_path, "7", "x y")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 7
    assert f"probe env=from-client cwd={tmp_path} argv=['7', 'x y']" in out
    assert "probe stderr" in err


def test_signals_reach_the_run(server: str, tmp_path: Path) -> None:
    proc = _client(server, tmp_path, "sleep")
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    line = ""
    while "sleeping" not in line:
        assert time.monotonic() < deadline
        line = proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 42


def test_killed_client_stops_its_run(server: str, tmp_path: Path) -> None:
    proc = _client(server, tmp_path, "sleep")
    assert proc.stdout is not None
    while "sleeping" not in proc.stdout.readline():
        pass
    probes = subprocess.run(["pgrep", "-f", "tests.unit.warm_probe"], capture_output=True, text=True).stdout.split()
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 15
    # The fork server's child runs under the server's command line; after the client's death
    # no process of the server is left sleeping (only the server itself).
    while len(subprocess.run(["pgrep", "-f", "tests.unit.warm_probe"], capture_output=True, text=True).stdout.split()) >= len(probes):
        assert time.monotonic() < deadline, "the run outlived its killed client"
        time.sleep(0.2)


def test_without_a_server_the_client_is_the_stock_engine(tmp_path: Path) -> None:
    proc = _client(str(tmp_path / "nobody.sock"), tmp_path, "not-a-flow-run-id")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "Invalid flow run id" in out + err


def test_worker_makes_relative_settings_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deployments.worker.fast_worker import absolute_paths

    monkeypatch.chdir(tmp_path)
    env = {"JOBCLOUD_CONFIG": "cat.yaml", "JOBCLOUD_STORAGE": "s3://b/p", "JOBCLOUD_HOME": "~/jc", "JOBCLOUD_WORKDIR": "/abs"}
    absolute_paths(env)
    assert env["JOBCLOUD_CONFIG"] == str(tmp_path / "cat.yaml")
    assert env["JOBCLOUD_STORAGE"] == "s3://b/p"
    assert env["JOBCLOUD_HOME"] == os.path.expanduser("~/jc")
    assert env["JOBCLOUD_WORKDIR"] == "/abs"


def test_a_failed_label_write_does_not_crash_the_run() -> None:
    import asyncio
    import uuid

    from prefect.exceptions import PrefectHTTPStatusError

    from deployments.worker.fast_worker import JobCloudWorker

    class Client:
        async def update_flow_run_labels(self, *args: object) -> None:
            import httpx

            request = httpx.Request("PATCH", "http://x/api/flow_runs/1/labels")
            response = httpx.Response(503, request=request)
            raise PrefectHTTPStatusError.from_httpx_error(httpx.HTTPStatusError("503", request=request, response=response))

    worker = JobCloudWorker(work_pool_name="cpu")
    worker._client = Client()  # type: ignore[assignment]
    asyncio.run(worker._give_worker_labels_to_flow_run(uuid.uuid4()))  # logs, does not raise
