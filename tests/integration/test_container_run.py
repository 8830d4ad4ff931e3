"""The container run loop on a real engine: whatever way a run ends, its container is gone
when `run_container` returns (the guard and the sweeper are nets under this, not a substitute)."""

from __future__ import annotations

import pytest

from jobcloud.blocks.engine import docker_client
from jobcloud.flows.container_run import run_container
from jobcloud.flows.container_spec import ContainerSpec
from tests.engine_helpers import labelled_containers

pytestmark = pytest.mark.integration

BUSYBOX = "localhost/jobcloud/busybox:1"


def _spec(tmp_path, cmd: str, timeout: int | None = None) -> ContainerSpec:
    return ContainerSpec(
        image=BUSYBOX,
        command=["/bin/sh", "-c", cmd],
        host_files=str(tmp_path),
        labels={"io.jobcloud.job-id": f"run-loop-{tmp_path.name}"},
        timeout=timeout,
    )


def _left(spec: ContainerSpec) -> list:
    return labelled_containers(None, f"io.jobcloud.job-id={spec.labels['io.jobcloud.job-id']}")


@pytest.mark.parametrize(
    ("cmd", "timeout", "exit_code", "timed_out"),
    [("echo ok", None, 0, False), ("echo broke >&2; exit 3", None, 3, False), ("sleep 30", 1, None, True)],
    ids=["exit-0", "exit-3", "timeout"],
)
def test_container_is_removed_however_it_ends(engine: str, images: None, tmp_path, cmd, timeout, exit_code, timed_out) -> None:
    client = docker_client()
    spec = _spec(tmp_path, cmd, timeout)
    lines: list[str] = []
    outcome = run_container(client, spec, lines.append)
    assert outcome.timed_out is timed_out
    if exit_code is not None:
        assert outcome.exit_code == exit_code
    assert _left(spec) == []  # at once, not later by a guard or sweeper


def test_container_is_removed_when_the_caller_breaks(engine: str, images: None, tmp_path) -> None:
    client = docker_client()
    spec = _spec(tmp_path, "echo one; sleep 30")

    def on_start(_: str) -> None:
        raise KeyboardInterrupt  # what a Ctrl-C or Prefect's cancel does to the waiting thread

    with pytest.raises(KeyboardInterrupt):
        run_container(client, spec, lambda line: None, on_start=on_start)
    assert _left(spec) == []
