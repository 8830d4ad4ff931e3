"""Faults of whole hosts and links on the rig, none needing product code of its own: the Prefect
server or its PostgreSQL restarted mid-job, the store host cut off during an upload, a worker
host "rebooted". Each case records a row of the table printed at the end (conftest.record)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from jobcloud.flows.slot_lease import SLOT_LEASE_S
from tests.cluster.conftest import (
    RULE_LOADED_S,
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
    zombie_diagnosis,
)
from tests.cluster.rig import BUCKET, Cluster

pytestmark = [pytest.mark.cluster, needs_netns]

NAP = "rig-nap/rig-v1-nap"  # Prefect's <flow>/<deployment> of rig/v1/nap
# Prefect's repossessor service looks for expired concurrency leases this often (its default).
REPOSSESSOR_S = 15


def queue_one(cluster: Cluster, due_in_s: float) -> str:
    """A nap job that becomes due ``due_in_s`` from now (Scheduled until then: queued)."""
    from prefect.states import Scheduled

    with client(cluster) as c:
        deployment = c.read_deployment_by_name(NAP)
        run = c.create_flow_run_from_deployment(
            deployment.id,
            parameters={"env": {"NAP_S": "1"}},
            state=Scheduled(scheduled_time=datetime.now(UTC) + timedelta(seconds=due_in_s)),
        )
    return str(run.id)


def _restart_case(cluster: Cluster, case: str, restart, due_in_s: float) -> None:
    """A running job and a queued one across a restart: both Completed, once each, nothing left."""
    slots = pool_slots_held(cluster)
    job = cluster.submit("rig/v1/nap", "--env", "NAP_S=5")
    running(cluster, job)
    queued = queue_one(cluster, due_in_s)
    down_wall = datetime.now(UTC)
    t0 = time.monotonic()
    down, up = restart()
    states, settle_s = settle(cluster, [job, queued], t0)
    left = leftovers(cluster, [job, queued], slots)
    twice = run_twice(cluster, [job, queued])
    started = flow_run(cluster, queued).start_time
    final = f"running: {states[job]}, queued: {states[queued]} (down {up - down:.1f} s)"
    record(case, final, settle_s, left, twice)
    assert states == {job: "Completed", queued: "Completed"}, (states, cluster.logs(20))
    assert started is not None and started >= down_wall, f"the queued job started at {started}, before the restart at {down_wall}"
    assert twice == "none" and left == "none", (twice, left)
    for j in (job, queued):
        assert cluster.manifest(j) is not None and missing_outputs(cluster, j) == [], j


# How long a restart keeps the server or database away: a restart on a busy host, a failover.
# Fixed, so that the running job's container ends while it is away (a task's state then has
# nowhere to go) and the queued job falls due while it is away, whatever this machine's speed.
OUTAGE_S = 10


def test_prefect_server_restarted_mid_job(cluster: Cluster) -> None:
    _restart_case(cluster, f"Prefect server restarted mid-job ({OUTAGE_S} s away)", lambda: cluster.restart_server(down_s=OUTAGE_S), 3)


def test_postgres_restarted_mid_job(cluster: Cluster) -> None:
    _restart_case(cluster, f"PostgreSQL restarted mid-job ({OUTAGE_S} s away)", lambda: cluster.restart_postgres(down_s=OUTAGE_S), 3)


def test_store_partitioned_during_upload(cluster: Cluster) -> None:
    """Cut off for 4 s during a job's upload, then healed: Completed with every output, or Failed
    naming the store; never a manifest naming a file the store lacks."""
    files = 3000  # about 6 s of uploading here
    slots = pool_slots_held(cluster)
    job = cluster.submit("rig/v1/many", "--env", f"FILES={files}")
    s3 = cluster.s3()

    def uploading() -> bool:
        page = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"jobcloud/jobs/{job}/output/", MaxKeys=1)
        return page.get("KeyCount", 0) > 0

    wait_for(uploading, 120, lambda: f"job {job} to upload\n{cluster.logs(20)}", every=0.05)
    t0 = time.monotonic()
    cluster.partition("store")
    try:
        time.sleep(4)
    finally:
        cluster.heal("store")
    states, settle_s = settle(cluster, [job], t0)
    run = flow_run(cluster, job)
    manifest = cluster.manifest(job)
    missing = missing_outputs(cluster, job)
    left = leftovers(cluster, [job], slots)
    final = states[job] if states[job] == "Completed" else f"{states[job]}: {(run.state.message or '')[:120]}"
    record(
        "store host partitioned 4 s during upload",
        final,
        settle_s,
        left + (f", manifest names missing {len(missing)}" if missing else ""),
        run_twice(cluster, [job]),
    )
    assert missing == [], f"the manifest names {len(missing)} files the store lacks, e.g. {missing[:3]}"
    if states[job] == "Completed":
        assert manifest is not None and len([o for o in manifest["outputs"] if "/output/" in o["key"]]) == files
    else:
        message = (run.state.message or "").lower()
        assert states[job] == "Failed" and ("store" in message or "s3" in message), run.state.message
    assert left == "none", left


def smallest_zombie_window() -> int:
    """The smallest JOBCLOUD_ZOMBIE_AFTER_S JobCloud accepts, at least 20 s."""
    from jobcloud.blocks.settings import JobCloudSettings

    for seconds in (20, 30, 60, 90):
        try:
            JobCloudSettings(zombie_after_s=seconds)
        except Exception:  # noqa: BLE001 - below the minimum
            continue
        return seconds
    return 90


def test_worker_host_rebooted(cluster: Cluster) -> None:
    """Every process of the host that runs a job SIGKILLed: the run ends Crashed (the server's
    zombie automation), its container is swept when a worker starts on that host again, and no
    slot of the pool's limit stays held."""
    window = smallest_zombie_window()
    cluster.deploy(JOBCLOUD_ZOMBIE_AFTER_S=str(window))
    # Submitted once the server's trigger service has the new window (watched_by_zombie_rule),
    # so that its first heartbeat already counts.
    time.sleep(max(0.0, cluster.deployed_at + RULE_LOADED_S - time.time()))
    host = None
    slots = pool_slots_held(cluster)
    try:
        job = cluster.submit("rig/v1/nap", "--env", "NAP_S=600")
        container = running(cluster, job)
        time.sleep(2)  # mid-job: its command has run a while
        watched_by_zombie_rule(cluster, job)
        (host,) = cluster.hosts_of(job)
        assert cluster.host_of_container(container) == host  # its io.jobcloud.host label
        t0, rebooted_at = time.monotonic(), datetime.now(UTC)
        cluster.reboot(host)
        after_reboot = len(cluster.job_containers(job))
        state = wait_for(lambda: final_state(cluster, job), window + 60, lambda: zombie_diagnosis(cluster, job, rebooted_at))
        crashed_s = time.monotonic() - t0
        after_crash = len(cluster.job_containers(job))  # the engine's: outlive the host's processes
        cluster.start_worker(host)  # sweeps when it starts
        _, settle_s = settle(cluster, [job], t0, timeout=60)
        # The dead host's slot is its lease's until that runs out (renewed up to RENEW_EVERY_S
        # before the kill) and the server's repossessor, every 15 s, takes it back.
        lease_over_s = SLOT_LEASE_S + REPOSSESSOR_S + 5 - (time.monotonic() - t0)
        left = leftovers(cluster, [job], slots, slot_wait_s=max(10.0, lease_over_s))
        twice = run_twice(cluster, [job])
        record(
            f"worker host {host} rebooted (zombie window {window} s)",
            f"{state} after {crashed_s:.1f} s; containers after the reboot {after_reboot}, after the crash {after_crash}",
            settle_s,
            left,
            twice,
        )
        assert state == "Crashed", flow_run(cluster, job).state
        assert after_reboot == 1, "the job's container should outlive its host's processes"
        assert left == "none" and twice == "none", (left, twice)
    finally:
        cluster.deploy()  # JobCloud's default window again
        if host is not None and host not in cluster.workers:
            cluster.start_worker(host)
