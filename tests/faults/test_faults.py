"""Faults, signals, engines and bad input, with real processes, a real engine and a real
Prefect server. Each case asserts the final state within its deadline, that no container with
the job's labels and no process of the case's JobCloud home is left, and that the store holds
no half-written result; and adds its row to the table printed at the end of the run.

Deadlines here are bounds a run must meet to count as settled at all (generous for a busy CI
machine); the seconds each case actually took go to the table, not into assertions.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from datetime import UTC
from pathlib import Path

import pytest

from tests.faults.conftest import (
    Stage,
    containers_of,
    final_state,
    job_id_in,
    kill,
    leftovers,
    manifest,
    processes_with,
    record,
    run_state,
    running_container,
    settle,
    wait_for,
)

pytestmark = pytest.mark.e2e

CRASH_DEADLINE_S = 30  # a dead process's run is final and cleaned up within this
CANCEL_DEADLINE_S = 15  # goal 5 s; the bound leaves room for a loaded machine
IDLE_STOP_DEADLINE_S = 15  # goal 5 s
STAGED_FILES = 50000  # staging them takes several seconds: time for a cancel to land mid-way


def _stored_log(stage: Stage, job_id: str) -> str:
    path = stage.store() / "jobs" / job_id / "log" / "container.log"
    return path.read_text() if path.is_file() else ""


def _ticked(home: str, job_id: str, line: str = "tick 1") -> None:
    log = Path(home) / "work" / job_id / "container.log"
    wait_for(lambda: log.is_file() and line in log.read_text(errors="replace"), 30, f"{line!r} in {log}")


def _submit(stage: Stage, env: dict[str, str], entry: str) -> str:
    proc = stage.jobcloud(env, "run", entry, "--no-wait", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)["id"]


def _task_running(stage: Stage, job_id: str, task: str) -> bool:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with stage.client() as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[job_id])))
    return any(r.name.startswith(task) and r.state is not None and r.state.is_running() for r in runs)


def cancel_job(stage: Stage, env: dict[str, str], job_id: str) -> float:
    """`jobcloud jobs cancel JOB_ID` (must exit 0); the monotonic time it was started."""
    t0 = time.monotonic()
    proc = stage.jobcloud(env, "jobs", "cancel", job_id)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return t0


# -- a process dies ---------------------------------------------------------------------------
def test_local_run_killed(stage: Stage) -> None:
    env = stage.case_env()
    home = env["JOBCLOUD_HOME"]
    cli = stage.spawn(env, "run", "faults/v1/nap", "--local")
    job = job_id_in(home)
    running_container(stage.engine_host, job)
    _ticked(home, job, "tick 2")
    t0 = kill(cli.pid)
    cli.wait(10)
    state, secs = settle(stage, job, home, t0, CRASH_DEADLINE_S)
    left = leftovers(stage, job, home)
    record("`run --local` SIGKILLed while its container runs", state, secs, CRASH_DEADLINE_S, left)
    assert state == "Crashed" and left == "none"
    assert manifest(stage, job)["state"] == "Crashed"
    assert "tick 2" in _stored_log(stage, job)  # the log so far was kept
    again = stage.jobcloud(env, "jobs", "cancel", job)
    assert again.returncode == 2 and "already ended (Crashed)" in again.stderr


def test_local_run_killed_while_server_is_down(stage: Stage) -> None:
    env = stage.case_env()
    home = env["JOBCLOUD_HOME"]
    idle = stage.worker(stage.case_env(), "w-idle-server-down")
    cli = stage.spawn(env, "run", "faults/v1/nap", "--local")
    job = job_id_in(home)
    running_container(stage.engine_host, job)
    stage.server.stop()
    try:
        t_term = kill(idle.popen.pid, signal.SIGTERM)
        idle.popen.wait(IDLE_STOP_DEADLINE_S)
        record(
            "idle worker SIGTERMed while the Prefect server is down",
            f"exited ({idle.popen.returncode})",
            time.monotonic() - t_term,
            5,
            "none",
        )
        t0 = kill(cli.pid)
        cli.wait(10)
        # The container goes at once; the run's state waits for the server.
        wait_for(lambda: not containers_of(stage.engine_host, job), CRASH_DEADLINE_S, "the container to go")
        time.sleep(5)
    finally:
        stage.server.start()
    state, secs = settle(stage, job, home, t0, 180)
    left = leftovers(stage, job, home)
    record("`run --local` SIGKILLed while the Prefect server is down (restarted after ~5 s)", state, secs, None, left)
    assert state == "Crashed" and left == "none"


def test_worker_killed(stage: Stage) -> None:
    env = stage.case_env()
    home = env["JOBCLOUD_HOME"]
    worker = stage.worker(env, "w-killed")
    job = _submit(stage, env, "faults/v1/nap")
    running_container(stage.engine_host, job)
    _ticked(home, job)
    assert any("warm_start --serve" in p for p in processes_with(f"JOBCLOUD_HOME={home}")), "no fork server"
    socket_folder = Path(re.search(r"fork server (\S+)/fork\.sock", worker.tail(200)).group(1))
    assert socket_folder.is_dir()
    t0 = kill(worker.popen.pid)
    state, secs = settle(stage, job, home, t0, CRASH_DEADLINE_S)
    left = leftovers(stage, job, home)
    if socket_folder.exists():
        left = f"{left}, socket folder {socket_folder}"
    record("worker SIGKILLed mid-job (fork server, flow run, container)", state, secs, CRASH_DEADLINE_S, left)
    assert state == "Crashed" and left == "none"
    assert "tick" in _stored_log(stage, job)


# -- workers told to stop ---------------------------------------------------------------------
def test_idle_worker_stops_on_sigterm(stage: Stage) -> None:
    env = stage.case_env()
    home = env["JOBCLOUD_HOME"]
    worker = stage.worker(env, "w-idle")
    t0 = kill(worker.popen.pid, signal.SIGTERM)
    worker.popen.wait(IDLE_STOP_DEADLINE_S)
    secs = time.monotonic() - t0
    wait_for(lambda: not processes_with(f"JOBCLOUD_HOME={home}"), 10, "the fork server to end")
    record("idle worker SIGTERMed", f"exited ({worker.popen.returncode})", secs, 5, "none")
    assert worker.popen.returncode == 0, worker.tail()


def test_busy_worker_lets_its_job_finish(stage: Stage) -> None:
    env = stage.case_env(JOBCLOUD_WORKER_STOP_GRACE_S="60")
    home = env["JOBCLOUD_HOME"]
    worker = stage.worker(env, "w-busy-finish")
    job = _submit(stage, env, "faults/v1/quick")
    running_container(stage.engine_host, job)
    t0 = kill(worker.popen.pid, signal.SIGTERM)
    later = _submit(stage, env, "faults/v1/quick")  # a stopping worker takes no new runs
    try:
        state, secs = settle(stage, job, home, t0, 60)
        worker.popen.wait(30)
        left = leftovers(stage, job, home)
        record("busy worker SIGTERMed, job ends within the grace", state, secs, None, left)
        assert state == "Completed" and left == "none"
        # A poll begun before the signal may bring `later` in: the worker gives it back.
        assert run_state(stage, later).is_scheduled(), "a stopping worker took a new run"
    finally:  # never leave a queued run for the next case's worker
        assert stage.jobcloud(env, "jobs", "cancel", later).returncode == 0


def test_busy_worker_cancels_after_grace(stage: Stage) -> None:
    env = stage.case_env(JOBCLOUD_WORKER_STOP_GRACE_S="3")
    home = env["JOBCLOUD_HOME"]
    worker = stage.worker(env, "w-busy-grace")
    job = _submit(stage, env, "faults/v1/nap")
    running_container(stage.engine_host, job)
    t0 = kill(worker.popen.pid, signal.SIGTERM)
    state, secs = settle(stage, job, home, t0, 3 + CRASH_DEADLINE_S)
    worker.popen.wait(10)
    left = leftovers(stage, job, home)
    record("busy worker SIGTERMed, grace 3 s runs out", state, secs, 3 + 5, left)
    assert state == "Cancelled" and left == "none"
    assert worker.popen.returncode == 0, worker.tail()


# -- cancel in each phase ---------------------------------------------------------------------
def test_cancel_queued(stage: Stage) -> None:
    from datetime import datetime, timedelta

    from prefect.states import Scheduled

    env = stage.case_env()
    with stage.client() as client:
        dep = client.read_deployment_by_name("faults-nap/faults-v1-nap")
        run = client.create_flow_run_from_deployment(dep.id, state=Scheduled(scheduled_time=datetime.now(UTC) + timedelta(hours=1)))
    t0 = cancel_job(stage, env, str(run.id))
    state = wait_for(lambda: final_state(stage, str(run.id)), CANCEL_DEADLINE_S, "cancel")
    record("cancel while queued", state, time.monotonic() - t0, 5, "none")
    assert state == "Cancelled"


def test_cancel_running_on_worker(stage: Stage) -> None:
    env = stage.case_env()
    home = env["JOBCLOUD_HOME"]
    stage.worker(env, "w-cancel")
    job = _submit(stage, env, "faults/v1/nap")
    running_container(stage.engine_host, job)
    t0 = cancel_job(stage, env, job)
    state, secs = settle(stage, job, home, t0, CANCEL_DEADLINE_S, worker_up=True)
    left = leftovers(stage, job, home, worker_up=True)
    record("cancel while running (worker)", state, secs, 5, left)
    assert state == "Cancelled" and left == "none"


def test_cancel_running_local(stage: Stage) -> None:
    env = stage.case_env()
    home = env["JOBCLOUD_HOME"]
    cli = stage.spawn(env, "run", "faults/v1/nap", "--local")
    job = job_id_in(home)
    running_container(stage.engine_host, job)
    _ticked(home, job)
    t0 = cancel_job(stage, env, job)
    state, secs = settle(stage, job, home, t0, CANCEL_DEADLINE_S)
    left = leftovers(stage, job, home)
    record("cancel while running (`run --local`)", state, secs, 5, left)
    assert cli.wait(10) == 1
    assert state == "Cancelled" and left == "none"
    assert manifest(stage, job)["state"] == "Cancelled"
    assert "tick 1" in _stored_log(stage, job)


def test_cancel_while_staging(stage: Stage) -> None:
    folder = stage.store() / "data" / "many"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(STAGED_FILES):
        (folder / f"f{i:05d}.txt").write_bytes(b"x" * 512)
    env = stage.case_env()
    home = env["JOBCLOUD_HOME"]
    cli = stage.spawn(env, "run", "faults/v1/nap", "--local", "--data", "data/many")
    job = job_id_in(home)
    # The first staged files on disk: the server hears of the task's state later than that.
    staged = Path(home) / "work" / job / "files" / "data" / "many"
    wait_for(lambda: staged.is_dir() and any(staged.iterdir()), 60, "staging to start", every=0.05)
    t0 = cancel_job(stage, env, job)
    state, secs = settle(stage, job, home, t0, CANCEL_DEADLINE_S)
    left = leftovers(stage, job, home)
    record(f"cancel while staging {STAGED_FILES:,} input files (`run --local`)", state, secs, 5, left)
    assert cli.wait(10) == 1
    assert state == "Cancelled" and left == "none"
    m = manifest(stage, job)
    assert m["state"] == "Cancelled" and m["exit_code"] is None  # the container never ran


def test_cancel_while_uploading(stage: Stage) -> None:
    env = stage.case_env()
    home = env["JOBCLOUD_HOME"]
    cli = stage.spawn(env, "run", "faults/v1/many_outputs", "--local")
    job = job_id_in(home)
    wait_for(lambda: _task_running(stage, job, "upload-outputs"), 120, "uploading to start", every=0.05)
    t0 = cancel_job(stage, env, job)
    state, secs = settle(stage, job, home, t0, CANCEL_DEADLINE_S)
    left = leftovers(stage, job, home)
    record("cancel while uploading 20,000 output files (`run --local`)", state, secs, 5, left)
    assert cli.wait(10) == 1
    assert state == "Cancelled" and left == "none"
    m = manifest(stage, job)
    assert m["state"] == "Cancelled"
    uploaded = list((stage.store() / "jobs" / job / "output").glob("*"))
    assert len(uploaded) < 20000, "the upload was not stopped"


def test_cancel_when_no_process_is_left(stage: Stage) -> None:
    """The job's process and its guard both gone (as with a lost host): cancel still ends it."""
    env = stage.case_env()
    home = env["JOBCLOUD_HOME"]
    cli = stage.spawn(env, "run", "faults/v1/nap", "--local")
    job = job_id_in(home)
    running_container(stage.engine_host, job)
    guards = [int(p.split()[0]) for p in processes_with(f"JOBCLOUD_HOME={home}") if "jobcloud.flows.job_guard" in p]
    assert guards, "no guard process"
    for pid in guards:
        os.kill(pid, signal.SIGKILL)
    kill(cli.pid)
    cli.wait(10)
    assert run_state(stage, job).is_running()  # nobody left to say otherwise
    t0 = cancel_job(stage, env, job)
    state, secs = settle(stage, job, home, t0, 30)
    left = leftovers(stage, job, home)
    record("cancel after the job's process and guard were SIGKILLed", state, secs, 10, left)
    assert state == "Cancelled" and left == "none"


# -- the engine -------------------------------------------------------------------------------
def test_engine_dies_mid_job(stage: Stage, tmp_path: Path) -> None:
    sock = tmp_path / "podman.sock"
    service = ["podman", "system", "service", "--time=0", f"unix://{sock}"]

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(service, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: sock.exists(), 30, "a second podman service")
        return proc

    if subprocess.run(["which", "podman"], capture_output=True).returncode != 0:
        pytest.skip("needs Podman to start a second engine service (this host's engine is Docker)")
    engine = start()
    env = stage.case_env(DOCKER_HOST=f"unix://{sock}")
    home = env["JOBCLOUD_HOME"]
    try:
        cli = stage.spawn(env, "run", "faults/v1/nap", "--local")
        job = job_id_in(home)
        running_container(f"unix://{sock}", job)
        t0 = kill(engine.pid)
        engine.wait(10)
        sock.unlink(missing_ok=True)
        assert cli.wait(60) == 1
        state = final_state(stage, job)
        message = run_state(stage, job).message or ""
        assert state == "Failed" and "DOCKER_HOST" in message and "Traceback" not in message, message
        # Usually the container outlives its engine's API process (conmon keeps it); now and then
        # Podman takes it down with the service. Either way nothing may be left once it is back.
        survived = bool(containers_of(stage.engine_host, job))
        engine = start()  # the engine comes back: the job's guard removes a surviving container
        _, secs = settle(stage, job, home, t0, 60)
        left = leftovers(stage, job, home)
        how = "removed by the guard once the engine was back" if survived else "gone with the engine"
        record(f"container engine killed mid-job (container {how})", state, secs, None, left)
        assert left == "none"
    finally:
        engine.kill()


# -- bad input --------------------------------------------------------------------------------
def _refused(stage: Stage, case: str, env: dict[str, str], *args: str, says: str) -> None:
    t0 = time.monotonic()
    proc = stage.jobcloud(env, *args)
    secs = time.monotonic() - t0
    left = ", ".join(f"container {c.id[:12]}" for c in containers_of(stage.engine_host)) or "none"
    record(case, f"exit {proc.returncode}", secs, None, left)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (Path(env["JOBCLOUD_HOME"]) / "work").exists() or not any((Path(env["JOBCLOUD_HOME"]) / "work").iterdir())


def test_docker_host_nowhere(stage: Stage, tmp_path: Path) -> None:
    env = stage.case_env(DOCKER_HOST=f"unix://{tmp_path}/nothing.sock")
    _refused(stage, "`DOCKER_HOST` points nowhere", env, "run", "faults/v1/quick", "--local", says="DOCKER_HOST")


def test_gpu_on_an_engine_without_gpus(stage: Stage) -> None:
    env = stage.case_env()
    _refused(stage, "`--gpu 99` on an engine without GPUs", env, "run", "faults/v1/quick", "--local", "--gpu", "99", says="GPU")


def test_symlinked_folder_in_the_store(stage: Stage, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours")
    link = stage.store() / "link"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside, target_is_directory=True)
    env = stage.case_env()
    _refused(
        stage,
        "`--data link/file` through a symlinked store folder",
        env,
        "run",
        "faults/v1/nap",
        "--local",
        "--data",
        "link/secret.txt",
        says="link",
    )
    dest = tmp_path / "got"
    proc = stage.jobcloud(env, "files", "get", "link/secret.txt", str(dest))
    assert proc.returncode == 2 and not (dest / "secret.txt").exists()


def test_timeout_ends_timed_out(stage: Stage) -> None:
    env = stage.case_env()
    home = env["JOBCLOUD_HOME"]
    t0 = time.monotonic()
    proc = stage.jobcloud(env, "run", "faults/v1/short", "--local", "--json")
    job = json.loads(proc.stdout)["id"]
    state, secs = settle(stage, job, home, t0, 60)
    left = leftovers(stage, job, home)
    record("job past its 2 s timeout", state, secs, None, left)
    assert proc.returncode == 1 and state == "TimedOut" and left == "none"
    message = run_state(stage, job).message or ""
    assert "line two" in message, message
    assert manifest(stage, job)["state"] == "TimedOut"
