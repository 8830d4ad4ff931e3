"""A run the server has ended stays ended, and a host that lost its server fences itself.

With a real worker, a real engine and a real Prefect server:

- the server marks a healthy running job Crashed (what the zombie automation does to a run
  whose heartbeats were lost), with the worker's sweeper every second so that the sweeper and
  the job race for the container: the job stops, starts no second container, uploads nothing,
  and the run stays Crashed;
- the Prefect server goes away for longer than `JOBCLOUD_FENCE_AFTER_S`: the job stops its
  container within the lease and uploads nothing, and nothing of it lands once the server is
  back.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import (
    Stage,
    containers_of,
    job_processes,
    leftovers,
    record,
    run_state,
    running_container,
    settle,
    wait_for,
)

pytestmark = pytest.mark.e2e

STOP_DEADLINE_S = 20  # the job notices within a second or two; room for a loaded machine
QUIET_S = 10  # how long nothing may change afterwards


def _submit(stage: Stage, env: dict[str, str], entry: str) -> str:
    proc = stage.jobcloud(env, "run", entry, "--no-wait", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)["id"]


def _stored(stage: Stage, job_id: str) -> list[str]:
    prefix = stage.store() / "jobs" / job_id
    return sorted(str(p.relative_to(prefix)) for p in prefix.rglob("*") if p.is_file()) if prefix.exists() else []


def _ticked(home: str, job_id: str) -> None:
    log = Path(home) / "work" / job_id / "container.log"
    wait_for(lambda: log.is_file() and "tick 2" in log.read_text(errors="replace"), 60, f"'tick 2' in {log}")


def _containers_seen(stage: Stage, job_id: str, seconds: float, seen: set[str]) -> None:
    """Watch the job's containers for ``seconds``, adding every id that shows up to ``seen``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seen.update(c.id for c in containers_of(stage.engine_host, job_id))
        time.sleep(0.2)


def test_a_run_the_server_crashed_stays_crashed(stage: Stage) -> None:
    env = stage.case_env(JOBCLOUD_SWEEP_INTERVAL_S="1")
    home = env["JOBCLOUD_HOME"]
    worker = stage.worker(env, "w-ended")
    try:
        _crash_a_running_job(stage, env, home)
    finally:  # the next case's job must go to the next case's worker
        worker.stop()


def _crash_a_running_job(stage: Stage, env: dict[str, str], home: str) -> None:
    from prefect.states import Crashed

    job = _submit(stage, env, "faults/v1/nap")
    first = running_container(stage.engine_host, job)
    _ticked(home, job)
    t0 = time.monotonic()
    with stage.client() as client:  # what the zombie automation does to a run that went quiet
        client.set_flow_run_state(job, Crashed(message="No heartbeat for 60 s (the test's stand-in)"), force=True)
    seen = {first.id}
    _containers_seen(stage, job, 0, seen)
    state, secs = settle(stage, job, home, t0, STOP_DEADLINE_S, worker_up=True)
    _containers_seen(stage, job, QUIET_S, seen)  # no retry starts a new container afterwards
    after = run_state(stage, job)
    left = leftovers(stage, job, home, worker_up=True)
    stored = _stored(stage, job)
    record("the server crashes a healthy running job (sweeper every 1 s)", after.name, secs, 5, left)
    assert state == "Crashed" and after.name == "Crashed", after
    assert "stand-in" in (after.message or ""), f"the run's end was overwritten: {after!r}"
    assert seen == {first.id}, f"a second container started for an ended run: {sorted(seen)}"
    assert stored == [], f"an ended run's attempt uploaded {stored}"
    assert left == "none"


def test_a_job_fences_itself_when_the_server_is_away(stage: Stage) -> None:
    env = stage.case_env(JOBCLOUD_FENCE_AFTER_S="5")
    home = env["JOBCLOUD_HOME"]
    worker = stage.worker(env, "w-fence")
    try:
        _fence_a_running_job(stage, env, home, worker)
    finally:
        worker.stop()


def _fence_a_running_job(stage: Stage, env: dict[str, str], home: str, worker: Any) -> None:
    job = _submit(stage, env, "faults/v1/nap")
    running_container(stage.engine_host, job)
    _ticked(home, job)
    stage.server.stop()
    try:
        t0 = time.monotonic()
        wait_for(lambda: not containers_of(stage.engine_host, job), 5 + STOP_DEADLINE_S, "the fenced job's container to go")
        fenced_s = time.monotonic() - t0
        wait_for(lambda: not job_processes(home, worker_up=True), STOP_DEADLINE_S, "the fenced job's processes to end")
        time.sleep(2)
    finally:
        stage.server.start()
    time.sleep(QUIET_S)  # the server is back: nothing of the fenced attempt lands now
    stored = _stored(stage, job)
    left = leftovers(stage, job, home, worker_up=True)
    state = run_state(stage, job)
    record("the Prefect server away longer than the fence lease (5 s)", f"fenced; {state.name} on the server", fenced_s, 5 + 2, left)
    assert stored == [], f"a fenced attempt uploaded {stored}"
    assert left == "none"
    assert "fenced" in worker.tail(400), "the job logged no fencing (the worker shows its runs' output)"
    # The run stays Running until the server's zombie rule ends it (JOBCLOUD_ZOMBIE_AFTER_S):
    # nothing is left to report it, and the attempt proposed no state of its own.
    assert state.name == "Running"
    with stage.client() as client:
        from prefect.states import Crashed

        client.set_flow_run_state(job, Crashed(message="the test ends it as the zombie rule would"), force=True)


def test_a_cancel_on_a_worker_without_a_catalog_logs_one_line(stage: Stage) -> None:
    """The documented worker host: no catalog file, the definition travels in the job template."""
    env = stage.case_env()
    home = env["JOBCLOUD_HOME"]
    worker_env = {k: v for k, v in env.items() if k != "JOBCLOUD_CONFIG"}
    worker = stage.worker(worker_env, "w-no-catalog")
    try:
        job = _submit(stage, env, "faults/v1/nap")
        running_container(stage.engine_host, job)
        _ticked(home, job)
        t0 = time.monotonic()
        cancel = stage.jobcloud(env, "jobs", "cancel", job)
        assert cancel.returncode == 0, cancel.stdout + cancel.stderr
        state, secs = settle(stage, job, home, t0, STOP_DEADLINE_S, worker_up=True)
        time.sleep(2)  # the worker's own handling of the cancel ends after the run's
        log = worker.tail(400)
        left = leftovers(stage, job, home, worker_up=True)
        record("cancel on a worker host with no catalog file", state, secs, 5, left)
        assert state == "Cancelled" and left == "none"
        assert "Traceback" not in log and "failed to retrieve flow" not in log, log[-3000:]
    finally:
        worker.stop()


def _faketime() -> str | None:
    import glob

    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    return found[0] if found else None


@pytest.mark.skipif(_faketime() is None, reason="libfaketime is not installed (scripts/setup.sh installs it)")
def test_a_host_whose_clock_is_5_minutes_off_runs_jobs_normally(stage: Stage) -> None:
    """A worker host (worker, fork server, flow runs, guards) 5 minutes ahead of the server,
    with a short fence lease: the job neither fences nor fails."""
    env = stage.case_env(JOBCLOUD_FENCE_AFTER_S="5", LD_PRELOAD=_faketime() or "", FAKETIME="+5m", FAKETIME_NO_CACHE="1")
    home = env["JOBCLOUD_HOME"]
    submit_env = {k: v for k, v in env.items() if k not in ("LD_PRELOAD", "FAKETIME", "FAKETIME_NO_CACHE")}
    worker = stage.worker(env, "w-skewed")
    try:
        skew = subprocess.run(["date", "+%s"], env=env, capture_output=True, text=True).stdout.strip()
        assert abs(int(skew) - time.time() - 300) < 30, "the worker's environment does not skew the clock"
        t0 = time.monotonic()
        job = _submit(stage, submit_env, "faults/v1/quick")
        state, secs = settle(stage, job, home, t0, 120, worker_up=True)
        left = leftovers(stage, job, home, worker_up=True)
        stored = _stored(stage, job)
        record("a worker host whose clock is 5 min ahead (fence lease 5 s)", state, secs, None, left)
        assert state == "Completed" and left == "none", worker.tail(60)
        assert "manifest.json" in stored and "output/done.txt" in stored, stored
        assert "fenced" not in worker.tail(400)
    finally:
        worker.stop()
