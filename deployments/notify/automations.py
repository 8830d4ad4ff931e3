"""The server-side automation that ends "zombie" flow runs: runs whose host died.

When a whole host dies (power, kernel panic, an evicted VM), nothing is left to report the run:
no flow process, no worker. The run would stay `Running` forever. JobCloud's worker sets
PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30 for each run, so a live run emits a
`prefect.flow-run.heartbeat` event every 30 s (Prefect's minimum). This module installs
Prefect's own documented remedy (docs: "How to detect and respond to zombie flows"): a
proactive automation that, per flow run, expects another heartbeat (or a final state) within
N seconds of each heartbeat, and otherwise sets the run Crashed. Nothing of JobCloud has to
be alive for it to act: the Prefect server's triggers and actions services do it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from jobcloud.blocks.settings import env_name, get_settings

# Prefect is imported inside the functions: `python -m jobcloud.deployments.notify.automations` and the
# CLI import this module before the API is fixed.

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.events.schemas.automations import AutomationCore

ZOMBIE_AUTOMATION = "jobcloud-zombie-runs"
ZOMBIE_AFTER_ENV = env_name("zombie_after_s")
# Its default, 90 s, is three missed heartbeats at Prefect's minimum interval (30 s): one late
# or lost event does not crash a healthy run. Prefect refuses proactive windows under 10 s.

HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"
# A run that ends stops heartbeating; its final-state event closes the window so that a
# finished run is not crashed afterwards. Event names are state *names*: TimedOut (a Failed
# type JobCloud uses for jobs past their timeout) needs its own entry.
FINAL_STATE_EVENTS = [f"prefect.flow-run.{name}" for name in ("Completed", "Failed", "TimedOut", "Cancelled", "Crashed")]


def zombie_after_s() -> int:
    """Seconds without a heartbeat after which a running flow run is declared Crashed
    (JOBCLOUD_ZOMBIE_AFTER_S, default 90, at least 10); a bad value is a `UserError`."""
    return get_settings().zombie_after_s


def zombie_automation(after_s: int | None = None) -> AutomationCore:
    """The automation that marks flow runs Crashed when their heartbeats stop."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    after = after_s if after_s is not None else zombie_after_s()
    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description=(
            f"JobCloud: marks a flow run Crashed when it sends no heartbeat for {after} s "
            "(its host died: no process is left to report it). Runs emit "
            "prefect.flow-run.heartbeat every 30 s; a final state ends the watch. "
            f"Managed by `jobcloud deploy`; the window is {ZOMBIE_AFTER_ENV}."
        ),
        trigger=EventTrigger(
            # The clock starts at a run's first heartbeat: runs without heartbeats (queued,
            # or started by something that does not send them) are never touched.
            after={HEARTBEAT_EVENT},
            expect={HEARTBEAT_EVENT, *FINAL_STATE_EVENTS},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=after),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {after} s: the run's host or process died without reporting it.",
                # Not forced: Prefect then refuses to crash a run that already reached a
                # final state (a heartbeat racing the run's end), which is what we want.
                force=False,
            )
        ],
    )


def _managed(automation: Any) -> dict[str, Any]:
    """The fields `ensure_zombie_automation` owns, comparable across client and server copies.

    Python-mode dumps keep `after`/`expect`/`for_each` as sets (JSON lists would compare in
    set-iteration order); the trigger's id is generated per object, so it is left out.
    """
    return {
        "description": automation.description,
        "trigger": automation.trigger.model_dump(exclude={"id"}),
        "actions": [a.model_dump() for a in automation.actions],
    }


def sync_zombie_automation(client: SyncPrefectClient, after_s: int | None = None) -> str:
    """Make the zombie-run automation match `zombie_automation`: "created", "updated" or
    "unchanged". Touches only automations named `ZOMBIE_AUTOMATION`.

    An existing automation keeps its id and its enabled flag (an operator may have paused it
    in the UI on purpose). Duplicates of the name (two deploys racing) are removed.
    """
    wanted = zombie_automation(after_s)
    existing = client.read_automations_by_name(ZOMBIE_AUTOMATION)
    if not existing:
        client.create_automation(wanted)
        return "created"
    keep, *extra = existing  # newest first (read_automations_by_name sorts by update)
    for dup in extra:
        client.delete_automation(dup.id)
    if _managed(keep) == _managed(wanted):
        return "updated" if extra else "unchanged"
    # A full PUT rather than `client.update_automation`: that one dumps with exclude_unset,
    # which drops the defaulted `type` discriminators of the trigger and the action. The
    # server's update schema forbids `owner_resource` (ownership is fixed at creation).
    body = wanted.model_copy(update={"enabled": keep.enabled}).model_dump(mode="json", exclude={"owner_resource"})
    response = client.request("PUT", "/automations/{id}", path_params={"id": keep.id}, json=body)
    response.raise_for_status()
    return "updated"


def ensure_zombie_automation(client: SyncPrefectClient, after_s: int | None = None) -> bool:
    """Create the zombie-run automation if absent, or replace its definition if it differs;
    True if it wrote anything (idempotent). ``client``: `get_client(sync_client=True)`."""
    return sync_zombie_automation(client, after_s) != "unchanged"


def main() -> None:
    """`python -m jobcloud.deployments.notify.automations`: install the automation on PREFECT_API_URL's server.

    A command of its own so that a process which must not import Prefect yet (local_server.py
    runs before PREFECT_API_URL is set) can have it done in a child process.
    """
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        print(f"{sync_zombie_automation(client)}  automation {ZOMBIE_AUTOMATION}")


if __name__ == "__main__":
    main()
