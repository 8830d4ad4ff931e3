"""The in-container runner: a job's command as a subprocess (real processes, no engine)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from jobcloud.blocks.errors import GpuUnavailableError
from jobcloud.flows.cancel_watch import StopFlag, _flag
from jobcloud.flows.container_spec import ContainerSpec
from jobcloud.flows.job_guard import kill_groups
from jobcloud.flows.process_run import child_environment, require_visible_gpus, run_process
from tests.waiting import wait_until


def spec(tmp_path: Path, script: str, timeout: int | None = None, **kw) -> ContainerSpec:
    return ContainerSpec(image="-", command=["/bin/sh", "-c", script], host_files=str(tmp_path), timeout=timeout, **kw)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie no one reaps still answers kill(0): look at its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_lines_exit_code_and_working_folder(tmp_path: Path) -> None:
    lines: list[str] = []
    out = run_process(spec(tmp_path, "echo one; pwd; printf 'no newline'; exit 3"), lines.append)
    assert out.exit_code == 3 and not out.ok and not out.timed_out
    assert lines == ["one", str(tmp_path), "no newline"]
    assert out.tail == lines


def test_environment_is_the_images_plus_the_jobs_only() -> None:
    parent = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PREFECT_API_URL": "http://x",
        "PREFECT__FLOW_RUN_ID": "1",
        "JOBCLOUD_STORAGE": "s3://b",
        "AWS_SECRET_ACCESS_KEY": "k",
        "GOOGLE_APPLICATION_CREDENTIALS": "/c",
        "KUBECONFIG": "/k",
    }
    s = ContainerSpec(
        image="-",
        command=[],
        host_files="/",
        environment={"EPOCHS": "3"},
        secret_environment={"TOKEN": SecretStr("s3cr3t")},
    )
    env = child_environment(parent, s)
    assert env == {"PATH": "/usr/bin", "HOME": "/root", "LANG": "C.UTF-8", "EPOCHS": "3", "TOKEN": "s3cr3t"}


def test_the_command_sees_only_that_environment(tmp_path: Path) -> None:
    lines: list[str] = []
    environ = {"PATH": os.environ["PATH"], "PREFECT_API_KEY": "pk", "JOBCLOUD_STORAGE": "s3://b/p"}
    out = run_process(spec(tmp_path, "env | sort", environment={"A": "1"}), lines.append, environ=environ)
    assert out.exit_code == 0
    names = {line.split("=", 1)[0] for line in lines}
    assert "A" in names and "PREFECT_API_KEY" not in names and "JOBCLOUD_STORAGE" not in names


def test_timeout_ends_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    lines: list[str] = []
    t = time.monotonic()
    # The shell ignores SIGTERM and leaves a background child: both must go.
    script = f"trap '' TERM; sleep 300 & echo $! > {pidfile}; echo started; while :; do sleep 1; done"
    out = run_process(spec(tmp_path, script, timeout=1), lines.append)
    took = time.monotonic() - t
    assert out.timed_out and not out.ok
    assert out.exit_code == 128 + signal.SIGKILL
    assert "started" in lines and any("timeout after 1 s" in line for line in lines)
    assert took < 1 + 10 + 5  # the timeout, the stop grace, slack
    child = int(pidfile.read_text())
    wait_until(lambda: not alive(child), 5, interval=0.1, message="the command's background child to go with its job")


def test_a_leftover_background_process_is_killed_when_the_command_ends(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    out = run_process(spec(tmp_path, f"sleep 300 & echo $! > {pidfile}; echo done"), lambda _: None)
    assert out.exit_code == 0
    child = int(pidfile.read_text())
    wait_until(lambda: not alive(child), 5, interval=0.1, message="the leftover background process to be killed")


def test_cancel_stops_the_command_promptly(tmp_path: Path) -> None:
    flag = StopFlag()
    token = _flag.set(flag)
    try:
        threading.Timer(0.5, flag.set).start()
        t = time.monotonic()
        out = run_process(spec(tmp_path, "echo up; sleep 300"), lambda _: None)
        took = time.monotonic() - t
    finally:
        _flag.reset(token)
    assert out.cancelled and not out.ok
    assert took < 3


def test_a_gpu_job_that_sees_no_gpu_fails_before_it_starts(tmp_path: Path) -> None:
    devices = tmp_path / "dev"
    devices.mkdir()
    (devices / "nvidiactl").touch()
    with pytest.raises(GpuUnavailableError, match=r"asks for 1 GPU\(s\) but this container sees 0"):
        require_visible_gpus(1, devices)
    (devices / "nvidia0").touch()
    require_visible_gpus(1, devices)
    with pytest.raises(GpuUnavailableError, match="sees 1"):
        require_visible_gpus(2, devices)
    require_visible_gpus(0, tmp_path / "nowhere")


def test_the_guard_kills_a_dead_jobs_process_group(tmp_path: Path) -> None:
    import subprocess

    proc = subprocess.Popen(["/bin/sh", "-c", "sleep 300 & wait"], start_new_session=True)
    try:
        kill_groups([proc.pid, 999_999_999 % 4_000_000])
        assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
