"""A task's TES state from its flow run's Prefect state (the table in docs/tes.md)."""

from __future__ import annotations

from typing import Any

from jobcloud.deployments.http_api.tes.models import TesState
from jobcloud.flows.tes_plan import EXECUTOR_ERROR_STATE

# Prefect state types that mean the task waits for a worker.
_QUEUED = {"SCHEDULED", "PENDING"}
# The Running phases (the task run that runs) before the first executor starts.
_INITIALIZING_PHASES = {"stage-inputs", "preprocessing"}


def tes_state(state_type: str | None, state_name: str | None, phase: str | None = None) -> TesState:
    """The TES state of a flow run in Prefect state ``state_type`` (its `StateType` value) named
    ``state_name``; ``phase``: the task run that runs inside Running (`phase_of`), if known."""
    kind = (state_type or "").upper()
    if not kind:
        return TesState.UNKNOWN
    if kind in _QUEUED:
        return TesState.QUEUED
    if kind == "RUNNING":
        return TesState.INITIALIZING if phase in _INITIALIZING_PHASES else TesState.RUNNING
    if kind == "COMPLETED":
        return TesState.COMPLETE
    if kind == "FAILED":
        return TesState.EXECUTOR_ERROR if state_name == EXECUTOR_ERROR_STATE else TesState.SYSTEM_ERROR
    if kind == "CRASHED":
        return TesState.SYSTEM_ERROR
    if kind == "CANCELLING":
        return TesState.CANCELING
    if kind == "CANCELLED":
        return TesState.CANCELED
    if kind == "PAUSED":
        return TesState.PAUSED
    return TesState.UNKNOWN


def state_of_run(run: Any, phase: str | None = None) -> TesState:
    """`tes_state` of a Prefect flow run."""
    if run.state is None:
        return TesState.QUEUED
    return tes_state(run.state.type.value, run.state.name, phase)


def is_final(state: TesState) -> bool:
    return state in {TesState.COMPLETE, TesState.EXECUTOR_ERROR, TesState.SYSTEM_ERROR, TesState.CANCELED, TesState.PREEMPTED}
