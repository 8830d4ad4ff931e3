"""The cluster tier's stage: one rig (tests/cluster/rig.py) for the whole session, started after
removing what an earlier crashed run left, and stopped (and checked to be gone) at the end.

Like tests/faults, each fault case records a row — case, final state, seconds from the fault to
settled, leftovers, jobs run twice — and the table is printed at the end of the run and written
to $JOBCLOUD_CLUSTER_TABLE when that is set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.rig import WORKERS, Cluster, cleanup_leftovers, netns_unavailable

NO_NETNS = netns_unavailable()
# Every test of this tier: skipped (with the reason) only where `ip netns` cannot work.
needs_netns = pytest.mark.skipif(NO_NETNS is not None, reason=f"the cluster rig needs network namespaces: {NO_NETNS}")


@dataclass
class Row:
    case: str
    final: str
    settle_s: float | None
    leftovers: str
    twice: str


ROWS: list[Row] = []


def record(case: str, final: str, settle_s: float | None, leftovers: str = "none", twice: str = "none") -> None:
    """Add a row to the table printed at the end of the run."""
    ROWS.append(Row(case, final, None if settle_s is None else round(settle_s, 1), leftovers, twice))


def table() -> str:
    lines = ["| case | final state | seconds to settle | leftovers | jobs run twice |", "|---|---|---|---|---|"]
    for r in ROWS:
        secs = "-" if r.settle_s is None else f"{r.settle_s:.1f}"
        lines.append(f"| {r.case} | {r.final} | {secs} | {r.leftovers} | {r.twice} |")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ROWS:
        return
    terminalreporter.section("JobCloud cluster faults")
    terminalreporter.write_line(table())
    out = os.environ.get("JOBCLOUD_CLUSTER_TABLE")
    if out:
        Path(out).write_text(table() + "\n")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The rig's own tests (test_rig.py) first among this tier's: a broken rig shows as such."""
    mine = [i for i, item in enumerate(items) if item.nodeid.startswith("tests/cluster/")]
    ordered = sorted((items[i] for i in mine), key=lambda item: not item.nodeid.startswith("tests/cluster/test_rig.py"))
    for i, item in zip(mine, ordered):
        items[i] = item


@pytest.fixture(scope="session")
def cluster(engine: str, images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A started rig: server (PostgreSQL + Prefect), worker hosts w1 and w2, store (S3)."""
    if NO_NETNS:
        pytest.skip(NO_NETNS)
    cleanup_leftovers(engine)  # of an earlier run that crashed (its owner process is gone)
    rig = Cluster(tmp_path_factory.mktemp("cluster"), engine)
    t0 = time.monotonic()
    rig.start()
    print(f"\ncluster rig up in {time.monotonic() - t0:.1f} s:\n{rig.describe()}")
    yield rig
    left = rig.stop()
    assert not left, f"the rig left: {left}"


# -- what a case checks ---------------------------------------------------------------------------
def wait_for(probe: Callable[[], Any], timeout: float, what: str | Callable[[], str], every: float = 0.2) -> Any:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what() if callable(what) else what}")
        time.sleep(every)


def client(rig: Cluster) -> Any:
    from tests.prefect_helpers import prefect_client

    return prefect_client(rig.api_url)


def flow_run(rig: Cluster, job_id: str) -> Any:
    with client(rig) as c:
        return c.read_flow_run(job_id)


def final_state(rig: Cluster, job_id: str) -> str | None:
    """The run's final state's name; None while it is not final or the server does not answer."""
    try:
        state = flow_run(rig, job_id).state
    except Exception:  # noqa: BLE001 - server restarting: not yet
        return None
    return state.name if state is not None and state.is_final() else None


def running(rig: Cluster, job_id: str, timeout: float = 90) -> Any:
    """Wait until the job's container runs; the container."""
    return wait_for(
        lambda: next((c for c in rig.job_containers(job_id) if c.status == "running"), None),
        timeout,
        lambda: f"job {job_id}'s container to run\n{rig.logs(15)}",
    )


def pool_slots_held(rig: Cluster) -> int:
    """Active slots of the `cpu` pool's global concurrency limit (`jobcloud-pool-cpu`)."""
    from jobcloud.flows.pool_slots import pool_slots_name

    with client(rig) as c:
        return c.read_global_concurrency_limit_by_name(pool_slots_name("cpu")).active_slots


def settle(rig: Cluster, job_ids: list[str], t0: float, timeout: float = 120) -> tuple[dict[str, str], float]:
    """Wait until every job is final and has no container and no work folder on any worker host;
    (job -> final state, seconds since t0)."""
    states = {}
    for job in job_ids:
        states[job] = wait_for(lambda j=job: final_state(rig, j), timeout, lambda j=job: f"job {j} to end\n{rig.logs(20)}", every=0.2)
    for job in job_ids:
        wait_for(lambda j=job: not rig.job_containers(j), timeout, f"job {job}'s containers to go", every=0.2)
    for job in job_ids:
        wait_for(
            lambda j=job: not work_folders(rig, j),
            timeout,
            lambda j=job: f"job {j}'s work folders to go: {work_folders(rig, j)}",
            every=0.2,
        )
    return states, time.monotonic() - t0


def work_folders(rig: Cluster, job_id: str) -> list[str]:
    """The worker hosts that still have the job's work folder."""
    return [h for h in WORKERS if (rig.home(h) / "work" / job_id).exists()]


def leftovers(rig: Cluster, job_ids: list[str], slots_before: int = 0, slot_wait_s: float = 10) -> str:
    """What settled jobs left: containers, work folders on any worker host, temporary objects in
    the store, and slots of the pool's limit still held beyond ``slots_before`` (those held when
    the case began) after up to ``slot_wait_s``."""
    left = []
    for job in job_ids:
        left += [f"container {c.id[:12]} of {job[:8]}" for c in rig.job_containers(job)]
        left += [f"work folder {h}:{job[:8]}" for h in work_folders(rig, job)]
        left += [f"temporary object {k}" for k in rig.objects(f"jobs/{job}/") if k.rsplit("/", 1)[-1].startswith(".") or k.endswith(".tmp")]
    deadline = time.monotonic() + slot_wait_s
    while (held := pool_slots_held(rig) - slots_before) > 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    if held > 0:
        left.append(f"{held} pool slot(s) held")
    return ", ".join(left) or "none"


def run_twice(rig: Cluster, job_ids: list[str]) -> str:
    """Jobs that a worker took more than once, or that ran (entered Running) more than once."""
    twice = []
    for job in job_ids:
        hosts = rig.hosts_of(job)
        runs = flow_run(rig, job).run_count
        if len(hosts) > 1 or runs > 1:
            twice.append(f"{job[:8]} (taken by {hosts}, run_count {runs})")
    return ", ".join(twice) or "none"


def missing_outputs(rig: Cluster, job_id: str) -> list[str]:
    """Outputs the job's manifest names that the store lacks (or holds with another size)."""
    m = rig.manifest(job_id)
    if m is None:
        return []
    have = rig.objects(f"jobs/{job_id}/")
    return [o["key"] for o in m["outputs"] if have.get(o["key"]) != o["size"]]


# How long after a `jobcloud deploy` that changed the zombie window the server's trigger service
# surely runs the new rule. Prefect gives the updated automation's trigger a new id, so a run's
# open watch (its heartbeat bucket) stays with the old rule, and the new one watches the run only
# from its next heartbeat on. A change reaches the trigger service at once over PostgreSQL's
# NOTIFY, but Prefect's listener gives up for good when PostgreSQL is away as it reconnects (the
# PostgreSQL restart case), after which its periodic reconcile (every 5 s) brings the change.
RULE_LOADED_S = 12


def heartbeats(rig: Cluster, job_id: str) -> list[Any]:
    """The flow run's heartbeat events the server holds (at most 50)."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    from jobcloud.deployments.notify.automations import HEARTBEAT_EVENT

    with client(rig) as c:
        page = c.read_events(
            filter=EventFilter(
                event=EventNameFilter(name=[HEARTBEAT_EVENT]), resource=EventResourceFilter(id=[f"prefect.flow-run.{job_id}"])
            ),
            limit=50,
        )
    return list(page.events)


def watched_by_zombie_rule(rig: Cluster, job_id: str, timeout: float = 90) -> None:
    """Wait for a heartbeat of the job that the zombie rule of the last deploy has seen: one that
    occurred RULE_LOADED_S after that deploy (Prefect heartbeats every 30 s). A host that dies
    before it would escape the rule, which is Prefect's behaviour when the window changes, not
    the case under test."""
    since = rig.deployed_at + RULE_LOADED_S
    wait_for(
        lambda: any(e.occurred.timestamp() >= since for e in heartbeats(rig, job_id)),
        timeout,
        lambda: f"a heartbeat of job {job_id} {RULE_LOADED_S} s after the deploy (seen: {[e.occurred for e in heartbeats(rig, job_id)]})",
    )


def zombie_diagnosis(rig: Cluster, job_id: str, since: datetime) -> str:
    """What a failed wait for the zombie automation needs: the job's heartbeats (one after
    ``since`` means a process of the job outlived the fault), the automation as the server holds
    it, the automation events since the fault, and the logs."""
    from prefect.events.filters import EventFilter, EventOccurredFilter, EventResourceFilter

    from jobcloud.deployments.notify.automations import ZOMBIE_AUTOMATION

    beats = sorted(e.occurred.isoformat(timespec="seconds") for e in heartbeats(rig, job_id))
    with client(rig) as c:
        defined = [(a.id, a.enabled, a.trigger) for a in c.read_automations_by_name(ZOMBIE_AUTOMATION)]
        acted = c.read_events(
            filter=EventFilter(occurred=EventOccurredFilter(since=since), resource=EventResourceFilter(id_prefix=["prefect.automation."])),
            limit=50,
        )
        state = flow_run(rig, job_id).state
    fired = [f"{e.occurred.isoformat(timespec='seconds')} {e.event} {e.payload}" for e in acted.events]
    return (
        f"job {job_id} to be ended by the zombie automation; state {state}; fault at {since.isoformat(timespec='seconds')}; "
        f"heartbeats {beats}; automation {defined}; automation events since then {fired}\n{rig.logs(40)}"
    )
