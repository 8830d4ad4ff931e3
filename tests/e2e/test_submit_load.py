"""Every submission lands: 100 `jobcloud run --no-wait` at once, from 20 processes of 5
threads, against a real `prefect server start` on SQLite (which answers 503 to most of them
at first: its database is locked by the others' writes), with no worker. Each submission
carries its own number (`--env LINEFIT_EPOCHS=<i>`): the deployment must end up with exactly
one flow run per number, every call must exit 0, and no process may print a traceback.

The threads call the CLI's own `main()`, so this is the command's whole path (catalog, input
checks, submit with retries, exit code) without paying Python's and Prefect's start-up 100
times on a 2-core machine. Nothing is mocked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobcloud.deployments.server.processes import PrefectServer
from tests.conftest import ROOT, Cli
from tests.prefect_helpers import prefect_client

pytestmark = pytest.mark.e2e

PROCESSES = 20
PER_PROCESS = 5
JOBS = PROCESSES * PER_PROCESS
DEPLOYMENT = "linefit-train/linefit-v1-train"
# The slowest submission here took about 4 minutes on a loaded 2-core machine; the default
# JOBCLOUD_SUBMIT_PATIENCE_S (600 s) is what is tested, this only stops a hung child.
CHILD_TIMEOUT_S = 900

# One child: wait for the common start instant, then run PER_PROCESS times, one after another,
# `jobcloud run linefit/v1/train ... --env LINEFIT_EPOCHS=<i> --no-wait`; prints "<i> <exit code>".
CHILD = """
import sys, threading, time
from jobcloud.deployments.cli.main import main
from jobcloud.deployments.jobs.submit import connect_api

start_at, first, count = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
connect_api()
import prefect.client.orchestration  # imported before the start: all submit at the same instant
codes = {}

def one(i):
    while time.time() < start_at:
        time.sleep(0.005)
    codes[i] = main(["run", "linefit/v1/train", "--config", "examples/config.yaml", "--data", "examples/points.csv",
                     "--env", f"LINEFIT_EPOCHS={i}", "--no-wait"])

# One after another within a child: typer's parsing is not thread-safe (it sets and deletes an
# environment variable around each call), so 20 processes submit at once, 5 rounds each.
for i in range(first, first + count):
    one(i)
print("CODES", " ".join(f"{i}:{c}" for i, c in sorted(codes.items())), flush=True)
"""


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrefectServer, dict[str, str], Path]]:
    """A real server with JobCloud's deployments and the example inputs, and no worker."""
    tmp = tmp_path_factory.mktemp("submit-load")
    server = PrefectServer(home=tmp / "prefect-home")
    base = {
        **os.environ,
        "JOBCLOUD_HOME": str(tmp / "jc-home"),
        "JOBCLOUD_STORAGE": str(tmp / "store"),
        "JOBCLOUD_CONFIG": str(ROOT / "application_config.yaml"),
        "PYTHONPATH": str(ROOT),
    }
    base.pop("JOBCLOUD_SUBMIT_PATIENCE_S", None)  # the default is what must hold
    server.start()
    try:
        env = server.env(base)
        cli = Cli(env=env, cwd=tmp)
        for args in (
            ("deploy", "--prefect-yaml", str(ROOT / "prefect.yaml")),
            ("files", "put", str(ROOT / "examples/linefit/config.yaml"), str(ROOT / "examples/linefit/points.csv"), "examples"),
        ):
            proc = cli(*args)
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        yield server, env, tmp
    finally:
        server.stop()


def _runs(api_url: str) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with prefect_client(api_url) as client:
        dep = client.read_deployment_by_name(DEPLOYMENT)
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])), limit=JOBS * 2)


def test_a_hundred_submissions_at_once_all_land_once(deployed: tuple[PrefectServer, dict[str, str], Path]) -> None:
    server, env, tmp = deployed
    assert _runs(server.api_url) == []
    # Long enough for 20 processes to import Prefect on 2 cores before the common start.
    start_at = time.time() + 30
    children = []
    for p in range(PROCESSES):
        log = open(tmp / f"child-{p}.err", "w+")  # noqa: SIM115 - read back after the child ends
        popen = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(start_at), str(p * PER_PROCESS), str(PER_PROCESS)],
            env=env,
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        children.append((popen, log))
    codes: dict[int, int] = {}
    problems = []
    for p, (popen, log) in enumerate(children):
        try:
            stdout, _ = popen.communicate(timeout=CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            popen.kill()
            stdout, _ = popen.communicate()
        log.seek(0)
        stderr = log.read()
        log.close()
        # Warnings may reach stderr under load (Prefect's, a retry's line); a lost job is a
        # non-zero exit or a missing run (below), and a traceback is never acceptable.
        if popen.returncode != 0 or "Traceback" in stderr:
            problems.append(f"child {p}: rc={popen.returncode}\n{stderr[-3000:]}")
        for line in stdout.splitlines():
            if line.startswith("CODES "):
                codes.update({int(i): int(c) for i, c in (pair.split(":") for pair in line.split()[1:])})
    assert not problems, "\n".join(problems)
    assert codes == {i: 0 for i in range(JOBS)}, {i: c for i, c in codes.items() if c != 0}

    runs = _runs(server.api_url)
    numbers = Counter(int(run.parameters["env"]["LINEFIT_EPOCHS"]) for run in runs)
    assert numbers == Counter(range(JOBS)), (
        f"{len(runs)} runs; missing {sorted(set(range(JOBS)) - set(numbers))}, twice {sorted(n for n, c in numbers.items() if c > 1)}"
    )
    assert all(run.state and run.state.is_scheduled() for run in runs)  # no worker: all queued
