"""The JobCloud worker never starts a run that ended while its submission was held up (a host
cut off between asking for work and submitting it), nor one it took while stopping."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from prefect.client.schemas.objects import State, StateType

import jobcloud.deployments.worker.fast_worker as fast_worker


def _states(*types: tuple[StateType, str]) -> list[State]:
    t0 = datetime.now(UTC)
    return [State(type=t, name=name, timestamp=t0 + timedelta(seconds=i)) for i, (t, name) in enumerate(types)]


class FakeClient:
    def __init__(self, history: list[State]) -> None:
        self.history = history
        self.set: list[Any] = []

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def read_flow_run_states(self, flow_run_id: Any) -> list[State]:
        return list(reversed(self.history))  # any order: the worker sorts by time

    async def set_flow_run_state(self, flow_run_id: Any, state: State, force: bool = False) -> None:
        self.set.append((state, force))


def _worker() -> Any:
    worker = object.__new__(fast_worker.JobCloudWorker)
    worker.name = "w-test"
    worker._stopping = False
    worker._returning = set()
    return worker


@pytest.mark.parametrize(
    ("history", "stale"),
    [
        ([(StateType.SCHEDULED, "Scheduled"), (StateType.PENDING, "Pending"), (StateType.PENDING, "Submitting")], False),
        # a manual retry of a failed run: it was AwaitingRetry (Scheduled) when taken
        ([(StateType.FAILED, "Failed"), (StateType.SCHEDULED, "AwaitingRetry"), (StateType.PENDING, "Pending")], False),
        # another worker ran it to the end before this one's Pending landed
        (
            [
                (StateType.SCHEDULED, "Scheduled"),
                (StateType.PENDING, "Pending"),
                (StateType.RUNNING, "Running"),
                (StateType.COMPLETED, "Completed"),
                (StateType.PENDING, "Pending"),
                (StateType.PENDING, "Submitting"),
            ],
            True,
        ),
        ([(StateType.SCHEDULED, "Scheduled"), (StateType.CANCELLED, "Cancelled"), (StateType.PENDING, "Pending")], True),
    ],
)
def test_a_run_that_ended_before_its_submission_is_not_started(monkeypatch, history, stale: bool) -> None:
    client = FakeClient(_states(*history))
    monkeypatch.setattr(fast_worker, "get_client", lambda: client)
    worker = _worker()
    ended = asyncio.run(worker._ended_since_seen(SimpleNamespace(id="run-1")))
    assert (ended is not None) is stale
    if stale:
        started: list[int] = []
        result = asyncio.run(worker._leave_ended(SimpleNamespace(id="run-1"), ended, SimpleNamespace(started=started.append)))
        assert result.status_code == 0 and started == [0]
        [(state, force)] = client.set
        assert force and state.type == ended.type and state.name == ended.name
