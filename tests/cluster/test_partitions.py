"""A worker host cut off from the rest: fencing, a partition healed in time, a cancel that waits
for the link, and many jobs across a partition. Each case records a row of the cluster table.

Both worker hosts run with a fence lease of FENCE_S (JOBCLOUD_FENCE_AFTER_S) and the server's
zombie window is the smallest JobCloud accepts (ZOMBIE_S): the lease must end before the run
is crashed, so that a retry elsewhere could never race the old copy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.cluster.conftest import (
    client,
    final_state,
    flow_run,
    leftovers,
    missing_outputs,
    needs_netns,
    pool_slots_held,
    record,
    run_twice,
    running,
    settle,
    wait_for,
    watched_by_zombie_rule,
    work_folders,
    zombie_diagnosis,
)
from tests.cluster.rig import WORKERS, Cluster

pytestmark = [pytest.mark.cluster, needs_netns]

FENCE_S = 20
ZOMBIE_S = 60  # JOBCLOUD_ZOMBIE_AFTER_S's minimum: Prefect's 30 s heartbeat plus one lost beat
# 200 in the suite (about 6 minutes here); JOBCLOUD_CLUSTER_JOBS=500 for the figure (docs/operations.md).
MANY = int(os.environ.get("JOBCLOUD_CLUSTER_JOBS", "200"))


@pytest.fixture(scope="module")
def fenced(cluster: Cluster) -> Iterator[Cluster]:
    """The rig with both workers on a FENCE_S lease and a ZOMBIE_S zombie window."""
    cluster.deploy(JOBCLOUD_ZOMBIE_AFTER_S=str(ZOMBIE_S))
    _restart_workers(cluster, JOBCLOUD_FENCE_AFTER_S=str(FENCE_S))
    try:
        yield cluster
    finally:
        cluster.deploy()
        _restart_workers(cluster)


def _restart_workers(cluster: Cluster, **settings: str) -> None:
    for host in WORKERS:
        if host in cluster.workers:
            cluster.workers.pop(host).stop()
        cluster.start_worker(host, **settings)


def _host_running(cluster: Cluster, job: str) -> str:
    running(cluster, job)
    hosts = wait_for(lambda: cluster.hosts_of(job), 30, f"the host that took {job}")
    return hosts[0]


def test_a_host_cut_off_past_the_zombie_window_fences_itself(fenced: Cluster) -> None:
    """Link down mid-job for longer than the zombie window: the host stops the job's container
    within the lease, the server crashes the run within the window, and when the link returns
    nothing of the old attempt is uploaded and nothing is left."""
    cluster = fenced
    slots = pool_slots_held(cluster)
    job = cluster.submit("rig/v1/nap", "--env", "NAP_S=600")
    host = _host_running(cluster, job)
    time.sleep(2)
    watched_by_zombie_rule(cluster, job)
    t0, cut_at = time.monotonic(), datetime.now(UTC)
    cluster.partition(host)
    try:
        wait_for(lambda: not cluster.job_containers(job), FENCE_S + 20, f"host {host} to fence job {job}")
        fenced_s = time.monotonic() - t0
        state = wait_for(lambda: final_state(cluster, job), ZOMBIE_S + 60, lambda: zombie_diagnosis(cluster, job, cut_at))
        crashed_s = time.monotonic() - t0
    finally:
        cluster.heal(host)
    time.sleep(10)  # the link is back: whatever the old attempt had left would land now
    _, settle_s = settle(cluster, [job], t0, timeout=60)
    stored = cluster.objects(f"jobs/{job}/")
    run = flow_run(cluster, job)
    left = leftovers(cluster, [job], slots)
    record(
        f"worker host cut off {crashed_s:.0f}+ s (fence lease {FENCE_S} s, zombie window {ZOMBIE_S} s)",
        f"{state}; container stopped after {fenced_s:.1f} s, run ended after {crashed_s:.1f} s; {len(stored)} object(s) uploaded",
        settle_s,
        left,
        run_twice(cluster, [job]),
    )
    assert state == "Crashed" and "heartbeat" in (run.state.message or ""), run.state
    assert fenced_s < crashed_s, "the run was crashed before its host fenced it: a retry could race the old copy"
    assert stored == {}, f"the fenced attempt uploaded {sorted(stored)}"
    assert left == "none", left
    assert "fenced" in cluster.workers[host].tail(400)


def test_a_partition_healed_within_the_lease_changes_nothing(fenced: Cluster) -> None:
    cluster = fenced
    slots = pool_slots_held(cluster)
    job = cluster.submit("rig/v1/nap", "--env", "NAP_S=12")
    host = _host_running(cluster, job)
    t0 = time.monotonic()
    cluster.partition(host)
    try:
        time.sleep(FENCE_S / 2)
    finally:
        cluster.heal(host)
    states, settle_s = settle(cluster, [job], t0)
    twice = run_twice(cluster, [job])
    left = leftovers(cluster, [job], slots)
    record(f"worker host cut off {FENCE_S / 2:.0f} s mid-job, healed within the lease", states[job], settle_s, left, twice)
    assert states[job] == "Completed" and twice == "none" and left == "none", (states, twice, left)
    assert cluster.manifest(job) is not None and missing_outputs(cluster, job) == []


def test_a_cancel_reaches_a_cut_off_host_once_the_link_returns(fenced: Cluster) -> None:
    cluster = fenced
    slots = pool_slots_held(cluster)
    job = cluster.submit("rig/v1/nap", "--env", "NAP_S=600")
    host = _host_running(cluster, job)
    cluster.partition(host)
    try:
        # What `jobcloud jobs cancel` asks of the server (the CLI then waits for the run to stop,
        # which a cut-off host cannot do yet).
        _cancel_via_client(cluster, job)
        time.sleep(5)
        assert cluster.job_containers(job), "the cut-off host stopped the job before it could hear the cancel"
    finally:
        cluster.heal(host)
    t0 = time.monotonic()
    states, settle_s = settle(cluster, [job], t0)
    left = leftovers(cluster, [job], slots)
    record("cancel while the host is cut off (8 s before the fence), counted from the heal", states[job], settle_s, left, "none")
    assert states[job] == "Cancelled" and left == "none", (states, left)


def _cancel_via_client(cluster: Cluster, job: str) -> None:
    from prefect.states import Cancelling

    with client(cluster) as c:
        c.set_flow_run_state(job, Cancelling(message="cancelled while its host was cut off"), force=True)


def test_many_jobs_across_a_partition_run_once_each(fenced: Cluster) -> None:
    """MANY tiny jobs queued across both hosts; one host is cut off (within the lease) and healed
    while they run: every job ends Completed, each run exactly once."""
    cluster = fenced
    slots = pool_slots_held(cluster)
    with client(cluster) as c:
        deployment = c.read_deployment_by_name("tiny-echo/tiny-v1-echo")
        jobs = [str(c.create_flow_run_from_deployment(deployment.id).id) for _ in range(MANY)]
    t0 = time.monotonic()
    wait_for(lambda: _completed(cluster, jobs) >= min(20, MANY // 4), 300, "the first jobs to complete")
    cluster.partition("w1")
    try:
        time.sleep(FENCE_S / 2)
    finally:
        cluster.heal("w1")
    wait_for(lambda: _completed(cluster, jobs, final=True) >= MANY, 60 * 30, lambda: f"{MANY} jobs to end\n{cluster.logs(10)}", every=2)
    took = time.monotonic() - t0
    states = _states(cluster, jobs)
    twice = run_twice(cluster, jobs)
    by_host = {h: sum(1 for j in jobs if cluster.hosts_of(j) == [h]) for h in WORKERS}
    left = leftovers(cluster, jobs, slots)
    done = sum(1 for s in states.values() if s == "Completed")
    record(
        f"{MANY} jobs, w1 cut off {FENCE_S / 2:.0f} s and healed while they ran",
        f"{done} Completed ({by_host}), {MANY / took * 60:.0f} jobs/min",
        took,
        left,
        twice,
    )
    assert done == MANY, {s: list(states.values()).count(s) for s in set(states.values())}
    assert twice == "none" and left == "none", (twice[:500], left)
    assert all(by_host.values()), f"a host ran none of the jobs: {by_host}"
    assert not any(work_folders(cluster, j) for j in jobs[:50])


def _states(cluster: Cluster, jobs: list[str]) -> dict[str, str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    found: dict[str, str] = {}
    with client(cluster) as c:
        for i in range(0, len(jobs), 200):
            for run in c.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=jobs[i : i + 200])), limit=200):
                found[str(run.id)] = run.state.name if run.state else "?"
    return found


def _completed(cluster: Cluster, jobs: list[str], final: bool = False) -> int:
    states = _states(cluster, jobs).values()
    if final:
        return sum(1 for s in states if s in ("Completed", "Failed", "Crashed", "Cancelled", "TimedOut"))
    return sum(1 for s in states if s == "Completed")
