"""The zombie-run automation against a real `prefect server start` (no mocks).

The real case: a flow process that heartbeats like a JobCloud run (PREFECT_FLOWS_HEARTBEAT_FREQUENCY
=30) is SIGKILLed, as when its host dies: nothing reports the end. The server's own triggers and
actions services must then set the run Crashed about JOBCLOUD_ZOMBIE_AFTER_S after its last
heartbeat, while a run that finished normally stays Completed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from jobcloud.deployments.notify.automations import (
    HEARTBEAT_EVENT,
    ZOMBIE_AUTOMATION,
    ensure_zombie_automation,
    zombie_after_s,
)
from jobcloud.deployments.server.processes import PrefectServer
from tests.prefect_helpers import prefect_client
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

AFTER_S = 20
# Proactive triggers are evaluated every 5 s (PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY), the
# action goes through the actions service, and this box is busy.
SLACK_S = 60

# A flow that heartbeats (the engine emits one as the run starts, then every 30 s), writes its
# run id, then either waits to be killed or returns at once.
FLOW_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from prefect import flow
    from prefect.runtime import flow_run

    @flow(name="zombie-probe")
    def probe(marker: str, finish: bool) -> None:
        with open(marker + ".tmp", "w") as fh:
            fh.write(flow_run.id)
        os.replace(marker + ".tmp", marker)
        # The finishing probe lingers 2 s so that its heartbeat thread has surely sent one.
        time.sleep(2 if finish else 600)

    probe(sys.argv[1], sys.argv[2] == "finish")
    """
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    srv = PrefectServer(home=tmp_path_factory.mktemp("zombie") / "ph")
    try:
        yield srv.start()
    finally:
        srv.stop()


def _start_probe(server: PrefectServer, tmp: Path, name: str, finish: bool) -> tuple[subprocess.Popen, Path]:
    script = tmp / "probe.py"
    script.write_text(FLOW_SCRIPT)
    env = server.env()
    env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = "30"  # as JobCloud's worker sets it
    marker = tmp / f"{name}.id"
    with open(tmp / f"{name}.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(marker), "finish" if finish else "hang"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return proc, marker


def _heartbeats(client: Any, run_id: UUID) -> list[Any]:
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    page = client.read_events(
        filter=EventFilter(
            event=EventNameFilter(name=[HEARTBEAT_EVENT]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
        ),
        limit=50,  # the client's default (100) is over the server's maximum (50): a 422
    )
    return sorted(page.events, key=lambda e: e.occurred)


def test_ensure_is_idempotent_and_touches_only_its_own(server: PrefectServer) -> None:
    from prefect.events.actions import DoNothing
    from prefect.events.schemas.automations import AutomationCore, EventTrigger

    with prefect_client(server.api_url) as client:
        other = client.create_automation(AutomationCore(name="someone-elses", trigger=EventTrigger(expect={"x.y"}), actions=[DoNothing()]))
        assert ensure_zombie_automation(client) is True  # created
        assert ensure_zombie_automation(client) is False  # already there, identical
        [auto] = client.read_automations_by_name(ZOMBIE_AUTOMATION)
        assert auto.trigger.within.total_seconds() == zombie_after_s() == 90
        assert auto.trigger.posture.value == "Proactive"

        # A different window replaces the definition in place; a paused one stays paused.
        client.pause_automation(auto.id)
        assert ensure_zombie_automation(client, after_s=120) is True
        [again] = client.read_automations_by_name(ZOMBIE_AUTOMATION)
        assert again.id == auto.id
        assert again.trigger.within.total_seconds() == 120
        assert again.enabled is False
        assert ensure_zombie_automation(client, after_s=120) is False
        client.resume_automation(auto.id)

        assert client.read_automation(other) is not None  # not ours: untouched

    # The command local_server.py runs in a child process (default window again: an update).
    env = {**server.env(), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("JOBCLOUD_ZOMBIE_AFTER_S", None)
    proc = subprocess.run(
        [sys.executable, "-m", "jobcloud.deployments.notify.automations"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["updated", "automation", ZOMBIE_AUTOMATION]


def test_a_killed_run_becomes_crashed(server: PrefectServer, tmp_path: Path) -> None:
    from prefect.client.schemas.objects import StateType

    with prefect_client(server.api_url) as client:
        # Below JOBCLOUD_ZOMBIE_AFTER_S's minimum (60 s): fine here, the victim is dead, and
        # the other probe ends within 2 s. A user's setting is refused (test_settings).
        ensure_zombie_automation(client, after_s=AFTER_S)
        [auto] = client.read_automations_by_name(ZOMBIE_AUTOMATION)
        assert auto.enabled and auto.trigger.within.total_seconds() == AFTER_S
        # The triggers service reloads automations every 5 s: let it see the new window before
        # the first heartbeat arrives (starting the flow processes takes longer anyway).
        victim, victim_marker = _start_probe(server, tmp_path, "victim", finish=False)
        done, done_marker = _start_probe(server, tmp_path, "done", finish=True)
        try:
            victim_id = UUID(
                wait_until(lambda: victim_marker.exists() and victim_marker.read_text(), 120, 0.5, message="the victim's run id")
            )
            wait_until(lambda: _heartbeats(client, victim_id), 60, 0.5, message="the victim's first heartbeat")
            # The host dies: no process is left to report anything.
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(10)
            done.wait(120)
            assert done.returncode == 0, (tmp_path / "done.log").read_text()
            done_id = UUID(done_marker.read_text())

            last_beat = _heartbeats(client, victim_id)[-1].occurred
            remaining = AFTER_S + SLACK_S - (time.time() - last_beat.timestamp())
            crashed = wait_until(
                lambda: (s := client.read_flow_run(victim_id).state) and s.type == StateType.CRASHED and s,
                max(remaining, 1),
                interval=1,
                message="the victim to be Crashed",
            )
        finally:
            for proc in (victim, done):
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)

        beats = _heartbeats(client, victim_id)
        seconds = (crashed.timestamp - beats[-1].occurred).total_seconds()
        print(f"\nzombie detection: {len(beats)} heartbeat(s), Crashed {seconds:.1f} s after the last (window {AFTER_S} s)")
        assert AFTER_S <= seconds <= AFTER_S + SLACK_S
        assert "heartbeat" in (crashed.message or "")

        # A run that ended normally also stopped heartbeating; its final state closed the window.
        done_beats = _heartbeats(client, done_id)
        assert done_beats, "the finished probe sent no heartbeat"
        wait = AFTER_S + 15 - (time.time() - done_beats[-1].occurred.timestamp())
        if wait > 0:
            time.sleep(wait)
        assert client.read_flow_run(done_id).state.type == StateType.COMPLETED
