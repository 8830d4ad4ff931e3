"""A job array under faults: cancelled while elements run, and its flow run's process
SIGKILLed. Each case: the array's run ends (Cancelled / Crashed), no element container, no
process of the case's home but the worker, and no element started after the fault."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.faults.conftest import (
    Stage,
    containers_of,
    kill,
    leftovers,
    processes_with,
    record,
    settle,
    wait_for,
)
from tests.faults.test_faults import CANCEL_DEADLINE_S, CRASH_DEADLINE_S, cancel_job

ELEMENTS, PARALLEL = 6, 3


def _start_array(stage: Stage, env: dict[str, str], name: str) -> str:
    rows = Path(env["JOBCLOUD_HOME"]).parent / f"{name}.jsonl"
    rows.write_text("{}\n" * ELEMENTS)
    proc = stage.jobcloud(env, "run", "faults/v1/nap", "--array", str(rows), "--parallel", str(PARALLEL), "--no-wait", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    array_id = json.loads(proc.stdout)["array_id"]
    wait_for(
        lambda: len([c for c in containers_of(stage.engine_host, array_id) if c.status == "running"]) == PARALLEL,
        120,
        f"{PARALLEL} elements of array {array_id} to run",
    )
    return array_id


def _elements_started(stage: Stage, run_id: str) -> int:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with stage.client() as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return len([r for r in runs if r.name.startswith("element-")])


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])


def test_cancel_mid_array(stage: Stage) -> None:
    env = stage.case_env()
    home = env["JOBCLOUD_HOME"]
    stage.worker(env, "w-array-cancel")
    array_id = _start_array(stage, env, "cancel")
    t0 = cancel_job(stage, env, array_id)
    state, secs = settle(stage, array_id, home, t0, CANCEL_DEADLINE_S, worker_up=True)
    left = leftovers(stage, array_id, home, worker_up=True)
    record(f"cancel mid-array ({PARALLEL} of {ELEMENTS} elements running)", state, secs, 5, left)
    assert state == "Cancelled" and left == "none"
    time.sleep(2)  # an element started after the cancel would show by now
    assert _elements_started(stage, array_id) == PARALLEL
    assert not containers_of(stage.engine_host, array_id)


def test_array_process_killed(stage: Stage) -> None:
    env = stage.case_env()
    home = env["JOBCLOUD_HOME"]
    stage.worker(env, "w-array-kill")
    array_id = _start_array(stage, env, "kill")
    guards = [int(p.split()[0]) for p in processes_with(f"JOBCLOUD_HOME={home}") if "jobcloud.flows.job_guard" in p]
    assert len(guards) == 1, "one guard for the whole array"
    run_pid = _ppid(guards[0])  # the guard's parent is the array's flow run process
    t0 = kill(run_pid)
    state, secs = settle(stage, array_id, home, t0, CRASH_DEADLINE_S, worker_up=True)
    left = leftovers(stage, array_id, home, worker_up=True)
    record(f"array's flow run SIGKILLed ({PARALLEL} elements running)", state, secs, CRASH_DEADLINE_S, left)
    assert state == "Crashed" and left == "none"
    assert _elements_started(stage, array_id) == PARALLEL
