"""The fork server behind the JobCloud worker: a run started through it gets the client's
environment (Prefect's settings included), folder, stdio and arguments, its exit code, its
signals and a normal interpreter exit (atexit handlers); without a server the client becomes
the stock engine command. And the worker type's leans on Prefect: the flow run's command, the
poll interval, the label hook it overrides (a private name of Prefect's, checked to exist)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


SERVER_LOG = "fork-server.log"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    sock = str(tmp_path / "fork.sock")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": "http://server.invalid/api"}
    with open(tmp_path / SERVER_LOG, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobcloud.deployments.worker.warm_start", "--serve", sock, "tests.unit.warm_probe"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def listening() -> bool:
        assert proc.poll() is None, "fork server exited before it listened"
        return os.path.exists(sock)

    wait_until(listening, 60, interval=0.1, message="the fork server to start")
    yield sock
    proc.terminate()
    assert proc.wait(10) is not None
    assert not os.path.exists(sock)


def _client(sock: str | None, cwd: Path, *args: str, env_extra: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROBE_VALUE": "from-client", **(env_extra or {})}
    env.pop("JOBCLOUD_WARM_SOCKET", None)
    if sock:
        env["JOBCLOUD_WARM_SOCKET"] = sock
    return subprocess.Popen(
        [sys.executable, "-m", "jobcloud.deployments.worker.warm_start", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_run_gets_env_cwd_args_stdio_and_exit_code(server: str, tmp_path: Path) -> None:
    proc = _client(server, tmp_path, "7", "x y")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 7
    assert f"probe env=from-client cwd={tmp_path} argv=['7', 'x y']" in out
    assert "probe stderr" in err


def test_each_run_leaves_its_mark_in_the_server_log(server: str, tmp_path: Path) -> None:
    run_id = "0b5e8a3c-1111-4222-8333-444455556666"
    proc = _client(server, tmp_path, "0", env_extra={"PREFECT__FLOW_RUN_ID": run_id})
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    log = (tmp_path / SERVER_LOG).read_text()
    assert re.search(rf"warm_start: flow run {run_id} forked as pid \d+", log), log


def test_the_run_exits_like_an_interpreter_running_its_atexit_handlers(server: str, tmp_path: Path) -> None:
    # Prefect sends a flow run's last logs and events to the API from atexit handlers.
    proc = _client(server, tmp_path, "atexit")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "probe atexit ran" in out


def test_the_run_reads_prefect_settings_from_its_own_environment(server: str, tmp_path: Path) -> None:
    # The server imported Prefect with its own environment; the run must not keep those settings.
    proc = _client(server, tmp_path, "settings", env_extra={"PREFECT_API_URL": "http://client.invalid/api"})
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "probe api url=http://client.invalid/api" in out


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
    # The fork server's child runs under the server's command line; after the client's death
    # no process of the server is left sleeping (only the server itself).
    wait_until(
        lambda: len(subprocess.run(["pgrep", "-f", "tests.unit.warm_probe"], capture_output=True, text=True).stdout.split()) < len(probes),
        15,
        message="the run to end with its killed client",
    )


def test_without_a_server_the_client_is_the_stock_engine(tmp_path: Path) -> None:
    proc = _client(str(tmp_path / "nobody.sock"), tmp_path, "not-a-flow-run-id")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "Invalid flow run id" in out + err


def test_worker_makes_relative_settings_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobcloud.deployments.worker.fast_worker import absolute_paths

    monkeypatch.chdir(tmp_path)
    env = {"JOBCLOUD_CONFIG": "cat.yaml", "JOBCLOUD_STORAGE": "s3://b/p", "JOBCLOUD_HOME": "~/jc", "JOBCLOUD_WORKDIR": "/abs"}
    absolute_paths(env)
    assert env["JOBCLOUD_CONFIG"] == str(tmp_path / "cat.yaml")
    assert env["JOBCLOUD_STORAGE"] == "s3://b/p"
    assert env["JOBCLOUD_HOME"] == os.path.expanduser("~/jc")
    assert env["JOBCLOUD_WORKDIR"] == "/abs"


class _FakeRun:
    id = uuid.uuid4()
    name = "fake-run"


def _configuration(template: dict[str, Any] | None = None) -> Any:
    import asyncio

    from jobcloud.deployments.pools.work_pools import base_job_template
    from jobcloud.deployments.worker.fast_worker import JobCloudJobConfiguration

    class NoClient:
        async def read_block_document_by_name(self, *a: object, **k: object) -> None:
            raise AssertionError("no blocks here")

    return asyncio.run(JobCloudJobConfiguration.from_template_and_values(template or base_job_template("cpu"), {}, client=NoClient()))


def test_with_a_fork_server_each_run_starts_through_its_client(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prefect's process worker starts the command a configuration has before Prefect prepares
    # it; one it fills in itself would be `python -m prefect.engine`, the cold start.
    from jobcloud.deployments.worker.fast_worker import warm_command
    from jobcloud.deployments.worker.warm_start import SOCKET_ENV

    monkeypatch.setenv(SOCKET_ENV, "/tmp/fork.sock")
    config = _configuration()
    config.prepare_for_flow_run(_FakeRun())
    assert config.command == warm_command()
    assert config.command.endswith("-m jobcloud.deployments.worker.warm_start")
    assert config.env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"

    monkeypatch.delenv(SOCKET_ENV)
    config = _configuration()
    config.prepare_for_flow_run(_FakeRun())
    assert config.command.endswith("-m prefect.engine")


def test_a_template_command_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobcloud.deployments.pools.work_pools import base_job_template
    from jobcloud.deployments.worker.warm_start import SOCKET_ENV

    monkeypatch.setenv(SOCKET_ENV, "/tmp/fork.sock")
    template = base_job_template("cpu")
    template["variables"]["properties"]["command"]["default"] = "my-launcher --run"
    config = _configuration(template)
    config.prepare_for_flow_run(_FakeRun())
    assert config.command == "my-launcher --run"


def _loop_interval(monkeypatch: pytest.MonkeyPatch) -> float:
    """The poll interval JobCloudWorker.start gives Prefect's worker loop."""
    import asyncio

    from prefect.settings import PREFECT_WORKER_QUERY_SECONDS
    from prefect.workers.process import ProcessWorker

    from jobcloud.deployments.worker.fast_worker import JobCloudWorker

    seen: list[float] = []

    async def loop(self: object, *args: object, **kwargs: object) -> None:
        seen.append(PREFECT_WORKER_QUERY_SECONDS.value())  # what Prefect's start() reads

    monkeypatch.setattr(ProcessWorker, "start", loop)
    asyncio.run(JobCloudWorker(work_pool_name="cpu").start(run_once=True))
    return seen[0]


def test_the_worker_asks_for_work_every_second_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import get_current_settings

    assert "query_seconds" not in get_current_settings().worker.model_fields_set, "set in this environment"
    assert _loop_interval(monkeypatch) == 1.0


def test_a_poll_interval_the_user_set_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_WORKER_QUERY_SECONDS, temporary_settings

    with temporary_settings(updates={PREFECT_WORKER_QUERY_SECONDS: 10}):
        assert _loop_interval(monkeypatch) == 10.0


def test_prefect_still_has_the_label_hook_the_worker_overrides() -> None:
    # JobCloudWorker overrides this private method of Prefect's; if Prefect renames it or stops
    # calling it when it submits a run, the override is dead code: fail here, loudly.
    import inspect

    from prefect.workers.base import BaseWorker

    from jobcloud.deployments.worker.fast_worker import JobCloudWorker

    name = "_give_worker_labels_to_flow_run"
    assert name in vars(JobCloudWorker)
    assert inspect.iscoroutinefunction(vars(BaseWorker).get(name)), f"Prefect's BaseWorker has no {name} any more"
    assert list(inspect.signature(getattr(BaseWorker, name)).parameters) == ["self", "flow_run_id"]
    assert f"self.{name}(flow_run.id)" in inspect.getsource(BaseWorker), f"Prefect no longer calls {name} on submission"


def _labelling_worker(error: BaseException) -> Any:
    from jobcloud.deployments.worker.fast_worker import JobCloudWorker

    class Client:
        async def update_flow_run_labels(self, *args: object) -> None:
            raise error

    worker = JobCloudWorker(work_pool_name="cpu")
    worker._client = Client()  # type: ignore[assignment]
    return worker


def test_a_failed_label_write_does_not_crash_the_run(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    request = httpx.Request("PATCH", "http://x/api/flow_runs/1/labels")
    response = httpx.Response(503, request=request)
    error = PrefectHTTPStatusError.from_httpx_error(httpx.HTTPStatusError("503", request=request, response=response))
    run_id = uuid.uuid4()
    with caplog.at_level("WARNING"):
        asyncio.run(_labelling_worker(error)._give_worker_labels_to_flow_run(run_id))  # logs, does not raise
    assert f"could not label flow run {run_id}" in caplog.text
    asyncio.run(_labelling_worker(httpx.ConnectError("refused"))._give_worker_labels_to_flow_run(run_id))


def test_only_the_server_s_answers_are_forgiven() -> None:
    # A programming error (a renamed method among them: AttributeError) must not be swallowed.
    import asyncio

    with pytest.raises(AttributeError):
        asyncio.run(_labelling_worker(AttributeError("renamed"))._give_worker_labels_to_flow_run(uuid.uuid4()))
