"""The rig itself: jobs submitted from the test's namespace run on both worker hosts with their
outputs in the S3 store host; a partition cuts a host off from every other; `stop` leaves
nothing, also after a failed start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.cluster.conftest import flow_run, missing_outputs, needs_netns, wait_for
from tests.cluster.rig import HOSTS, WORKERS, Cluster, namespace_pids

pytestmark = [pytest.mark.cluster, needs_netns]


def test_jobs_submitted_from_outside_run_on_both_worker_hosts(cluster: Cluster) -> None:
    # `jobcloud run --no-wait` in the root namespace, PREFECT_API_URL at the server host's address.
    with ThreadPoolExecutor(4) as pool:
        jobs = list(pool.map(lambda _: cluster.submit("tiny/v1/echo"), range(4)))
    ran_on: dict[str, list[str]] = {}

    def done(job: str) -> bool:
        if job not in ran_on and flow_run(cluster, job).state.is_final():
            ran_on[job] = cluster.hosts_of(job)
        return job in ran_on

    # The first worker to ask takes every due run: submit one at a time until both hosts took one.
    while True:
        for job in jobs:
            wait_for(lambda j=job: done(j), 120, lambda j=job: f"job {j} to end\n{cluster.logs(20)}")
        if {h for hosts in ran_on.values() for h in hosts} == set(WORKERS) or len(jobs) >= 10:
            break
        jobs.append(cluster.submit("tiny/v1/echo"))

    assert {h for hosts in ran_on.values() for h in hosts} == set(WORKERS), ran_on
    for job in jobs:
        run = flow_run(cluster, job)
        assert run.state.name == "Completed", (job, run.state.message)
        assert len(ran_on[job]) == 1 and run.run_count == 1, (job, ran_on[job], run.run_count)
        manifest = cluster.manifest(job)  # in the store host's bucket
        assert manifest is not None and manifest["state"] == "Completed", job
        assert any(o["key"] == f"jobs/{job}/log/container.log" for o in manifest["outputs"]), manifest["outputs"]
        assert missing_outputs(cluster, job) == []
        assert not (cluster.home(ran_on[job][0]) / "work" / job).exists()  # the host cleaned up after it


def _reaches(cluster: Cluster, host: str, targets: dict[str, tuple[str, int]]) -> dict[str, bool]:
    """Which of ``targets`` (name -> address, port) a TCP connect from ``host`` reaches in 1 s."""
    code = (
        "import socket, sys, json\n"
        "out = {}\n"
        "for name, addr, port in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        socket.create_connection((addr, port), timeout=1).close(); out[name] = True\n"
        "    except OSError:\n"
        "        out[name] = False\n"
        "print(json.dumps(out))\n"
    )
    arg = json.dumps([[n, a, p] for n, (a, p) in targets.items()])
    proc = subprocess.run([*cluster.prefix(host), sys.executable, "-c", code, arg], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_partition_cuts_every_link_of_the_host_and_heal_restores_them(cluster: Cluster) -> None:
    assert cluster.stack is not None and cluster.stack.server is not None and cluster.seaweed is not None
    api = (cluster.ip_of("server"), cluster.stack.server.port)
    s3 = (cluster.ip_of("store"), cluster.seaweed.ports["s3"])
    targets = {"server": api, "store": s3}
    assert _reaches(cluster, "w1", targets) == {"server": True, "store": True}
    cluster.partition("w1")
    try:
        assert _reaches(cluster, "w1", targets) == {"server": False, "store": False}
        assert _reaches(cluster, "w2", targets) == {"server": True, "store": True}  # only w1 is cut off
    finally:
        cluster.heal("w1")
    cluster.partition("store")
    try:
        assert _reaches(cluster, "w2", targets) == {"server": True, "store": False}
    finally:
        cluster.heal("store")
    wait_for(lambda: _reaches(cluster, "w1", targets) == {"server": True, "store": True}, 10, "w1 to reach every host again")


def test_stop_after_a_failed_start_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A second rig of this process (id suffix "g"): network built, a process on every host, then a failure.
    started = []

    def failing_services(self: Cluster) -> None:
        for host in HOSTS:
            started.append(self.exec(host, ["sleep", "300"]).popen)
        raise RuntimeError("boom while starting")

    monkeypatch.setattr(Cluster, "_services", failing_services)
    rig = Cluster(tmp_path, docker_host="unix:///nonexistent.sock", rid=f"{os.getpid():x}g")
    with pytest.raises(RuntimeError, match="boom while starting"):
        rig.start()
    assert rig.remains() == []
    assert all(namespace_pids(rig.ns(h)) == [] for h in HOSTS)
    assert len(started) == len(HOSTS) and all(p.poll() is not None for p in started)  # killed and reaped
