"""Priorities, limits, parameters and state words: the small pieces of deploy/submit/jobs."""

from __future__ import annotations

import pytest

from jobcloud.blocks.errors import ParameterError, UserError
from jobcloud.deployments.cli.deploy import parse_limits
from jobcloud.deployments.jobs.show import state_types
from jobcloud.deployments.jobs.submit import deployment_name, parameters_of
from jobcloud.deployments.pools.work_pools import prefect_priority, queue_name
from jobcloud.flows.catalog import EntrypointRef
from jobcloud.flows.request import HardwareOverride, JobRequest


def test_priorities_map_to_queues_most_urgent_first() -> None:
    assert [queue_name(p) for p in range(6)] == [f"priority-{p}" for p in range(6)]
    assert prefect_priority(5) == 1 and prefect_priority(0) == 6
    with pytest.raises(ParameterError):
        queue_name(6)


def test_limits() -> None:
    assert parse_limits(["cpu=4", "gpu=0"]) == {"cpu": 4, "gpu": 0}
    for bad in ("cpu", "cpu=x", "=3", "cpu=-1"):
        with pytest.raises(ParameterError):
            parse_limits([bad])


def test_parameters_leave_unset_out() -> None:
    req = JobRequest(config_id="c/a.yaml", data_ids=["d"], hardware=HardwareOverride(gpu=1))
    assert parameters_of(req) == {"config_id": "c/a.yaml", "data_ids": ["d"], "hardware": {"gpu": 1}}
    assert parameters_of(JobRequest()) == {}


def test_deployment_name() -> None:
    ref = EntrypointRef(application="linefit", version="v1", entrypoint="train")
    # `<flow>/<deployment>`: the deployments list shows `linefit-v1-train`, not a bare `v1`.
    assert deployment_name(ref) == "linefit-train/linefit-v1-train"
    assert (ref.flow_name, ref.deployment_name) == ("linefit-train", "linefit-v1-train")


def test_state_words() -> None:
    assert state_types("queued") == ["SCHEDULED", "PENDING"]
    assert state_types("Error") == ["FAILED", "CRASHED"]
    assert state_types("completed") == ["COMPLETED"]
    with pytest.raises(UserError):
        state_types("done-ish")


def test_cli_rejects_bad_priority_and_state(cli) -> None:
    proc = cli("run", "linefit/v1/train", "--priority", "9")
    assert proc.returncode == 2, proc.stderr
    proc = cli("jobs", "ls", "--state", "bogus")
    assert proc.returncode == 2 and "unknown state" in proc.stderr
    proc = cli("deploy", "--limit", "tpu=3")
    assert proc.returncode == 2 and "unknown pool" in proc.stderr


def test_wait_for_hints_once_while_queued_then_returns_final() -> None:
    from prefect.states import Completed, Scheduled

    from jobcloud.deployments.jobs import submit

    states = [Scheduled(), Scheduled(), Scheduled(), Completed()]

    class Run:
        def __init__(self, state) -> None:
            self.state = state

    class Client:
        def read_flow_run(self, _id):
            return Run(states.pop(0) if len(states) > 1 else states[0])

    hints, seen = [], []
    old = submit.POLL_S
    submit.POLL_S = 0.0
    try:
        final = submit.wait_for(
            Client(), "id", on_state=lambda s: seen.append(s.name), on_still_queued=lambda: hints.append(1), queued_hint_s=0
        )
    finally:
        submit.POLL_S = old
    assert final.state.is_completed()
    assert hints == [1] and seen == ["Scheduled", "Completed"]


def test_cli_says_when_the_server_does_not_answer(cli) -> None:
    from jobcloud.deployments.server.processes import free_port

    cli.env["PREFECT_API_URL"] = f"http://127.0.0.1:{free_port()}/api"
    proc = cli("jobs", "ls")
    assert proc.returncode == 1
    assert "does not answer" in proc.stderr and "Traceback" not in proc.stderr
