"""The fault suite's stage: one real Prefect server with JobCloud's deployments, a real engine,
real workers and `jobcloud` processes started per case, and what each case measured.

Each case gets its own JobCloud home, so "no JobCloud process left" is checkable: no process
on the machine may still carry that home in its environment when the case has settled. The
table of cases (final state, seconds from the fault to settled, leftovers) is printed at the
end of the run and written to $JOBCLOUD_FAULTS_TABLE when that is set.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from jobcloud.deployments.server.processes import PrefectServer, Proc, start_worker
from tests.conftest import JOBCLOUD, ROOT
from tests.engine_helpers import labelled_containers

BUSYBOX = "localhost/jobcloud/busybox:1"
JOB_LABEL = "io.jobcloud.job-id"

CATALOG = f"""
faults:
  v1:
    nap:
      description: Prints a tick every second until stopped.
      app: {{cmd: ["echo starting; i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done"]}}
      handler:
        image_url: "{BUSYBOX}"
        files_down: {{data_ids: data}}
        files_up: {{output: output, log: log}}
      aws_resources: {{timeout: 300}}
    quick:
      description: Ends by itself after three seconds.
      app: {{cmd: ["echo working; sleep 3; echo done > /files/output/done.txt"]}}
      handler: {{image_url: "{BUSYBOX}", files_up: {{output: output}}}}
    many_outputs:
      description: Writes 20,000 small files (slow to upload), then ends.
      app: {{cmd: ["cd /files/output && seq 1 20000 | xargs touch && echo wrote"]}}
      handler: {{image_url: "{BUSYBOX}", files_up: {{output: output}}}}
    short:
      description: Runs past its two-second timeout.
      app: {{cmd: ["echo line one; echo line two; sleep 30"]}}
      handler: {{image_url: "{BUSYBOX}", files_up: {{log: log}}}}
      aws_resources: {{timeout: 2}}
    gpu:
      description: Asks for a GPU.
      app: {{cmd: ["echo on a gpu?"]}}
      handler: {{image_url: "{BUSYBOX}"}}
      aws_resources: {{hardware: {{GPU: 1}}}}
"""


@dataclass
class Row:
    """One case of the table."""

    case: str
    final: str
    settle_s: float | None
    goal_s: float | None
    leftovers: str = "none"


ROWS: list[Row] = []


def record(case: str, final: str, settle_s: float | None, goal_s: float | None, leftovers: str = "none") -> None:
    """Add a row to the table printed at the end of the run."""
    ROWS.append(Row(case, final, None if settle_s is None else round(settle_s, 1), goal_s, leftovers))


def table() -> str:
    lines = ["| case | final state | seconds to settle | goal (s) | leftovers |", "|---|---|---|---|---|"]
    for r in ROWS:
        secs = "-" if r.settle_s is None else f"{r.settle_s:.1f}"
        goal = "-" if r.goal_s is None else f"{r.goal_s:g}"
        lines.append(f"| {r.case} | {r.final} | {secs} | {goal} | {r.leftovers} |")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ROWS:
        return
    terminalreporter.section("JobCloud fault suite")
    terminalreporter.write_line(table())
    out = os.environ.get("JOBCLOUD_FAULTS_TABLE")
    if out:
        Path(out).write_text(table() + "\n")


# -- the stage ------------------------------------------------------------------------------
@dataclass
class Stage:
    """The fault suite's server, catalog and shared store."""

    server: PrefectServer
    base: dict[str, str]
    tmp: Path
    engine_host: str
    homes: int = 0
    procs: list[Proc] = field(default_factory=list)

    def case_env(self, **extra: str) -> dict[str, str]:
        """An environment with a JobCloud home of its own (leftover processes are found by it)."""
        self.homes += 1
        env = {**self.base, "JOBCLOUD_HOME": str(self.tmp / f"home-{self.homes}"), **extra}
        return env

    def jobcloud(self, env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*JOBCLOUD, *args], env=env, cwd=self.tmp, capture_output=True, text=True, timeout=timeout)

    def spawn(self, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
        """`jobcloud ARGS` in the background, its output kept for the assertion messages."""
        log = open(self.tmp / f"spawn-{time.monotonic_ns()}.log", "w")
        return subprocess.Popen([*JOBCLOUD, *args], env=env, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT, text=True)

    def worker(self, env: dict[str, str], name: str) -> Proc:
        """This case's worker. An earlier case's worker still running would take this case's
        runs (its JOBCLOUD_HOME, not this one's): it is stopped first, one worker at a time."""
        for earlier in self.procs:  # the workers of earlier cases
            if earlier.alive():
                earlier.stop(timeout=15)
        proc = start_worker(self.server, "cpu", env, self.tmp / f"{name}.log", name=name)
        self.procs.append(proc)
        wait_for(lambda: "started" in proc.tail(200) or None, 90, f"worker {name} to start:\n{proc.tail()}")
        return proc

    def client(self) -> Any:
        from tests.prefect_helpers import prefect_client

        return prefect_client(self.server.api_url)

    def store(self) -> Path:
        return Path(self.base["JOBCLOUD_STORAGE"])


@pytest.fixture(scope="session")
def stage(engine: str, images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    tmp = tmp_path_factory.mktemp("faults")
    catalog = tmp / "application_config.yaml"
    catalog.write_text(CATALOG)
    server = PrefectServer(home=tmp / "prefect-home")
    server.start()
    base = server.env(
        {
            **{k: v for k, v in os.environ.items() if not k.startswith("JOBCLOUD_")},
            "JOBCLOUD_STORAGE": str(tmp / "store"),
            "JOBCLOUD_CONFIG": str(catalog),
            "DOCKER_HOST": engine,
            "PYTHONPATH": str(ROOT),
            "JOBCLOUD_GUARD_PATIENCE_S": "120",
        }
    )
    st = Stage(server, base, tmp, engine)
    try:
        deploy = st.jobcloud(st.case_env(), "deploy")
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        yield st
    finally:
        for proc in st.procs:
            proc.stop(timeout=5)
        server.stop()


# -- what a case checks -----------------------------------------------------------------------
def wait_for(probe: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def containers_of(host: str, job_id: str | None = None) -> list[Any]:
    """Containers (running or not) with JobCloud's job label, of one job or all."""
    return labelled_containers(host, f"{JOB_LABEL}={job_id}" if job_id else JOB_LABEL)


def processes_with(env_entry: str) -> list[str]:
    """`pid cmdline` of every live process whose environment holds ``env_entry``."""
    needle = env_entry.encode() + b"\0"
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                environ = fh.read() + b"\0"
            with open(f"/proc/{pid}/stat", "rb") as fh:
                if fh.read().split(b") ", 1)[1][:1] == b"Z":
                    continue  # a zombie is only an exit status waiting to be read
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in environ:
            found.append(f"{pid} {cmd[:120]}")
    return found


def run_state(stage: Stage, job_id: str) -> Any:
    with stage.client() as client:
        return client.read_flow_run(job_id).state


def final_state(stage: Stage, job_id: str) -> str | None:
    state = run_state(stage, job_id)
    return state.name if state is not None and state.is_final() else None


def job_id_in(home: str, timeout: float = 120) -> str:
    """The id of the one job whose work folder appears under this JobCloud home."""
    work = Path(home) / "work"

    def probe() -> str | None:
        for marker in work.glob("*/job.json"):
            return marker.parent.name
        return None

    return wait_for(probe, timeout, f"a job under {work}")


def running_container(host: str, job_id: str, timeout: float = 120) -> Any:
    return wait_for(
        lambda: next((c for c in containers_of(host, job_id) if c.status == "running"), None), timeout, f"job {job_id}'s container to run"
    )


WORKER_PROCESSES = ("worker start", "warm_start --serve")


def job_processes(home: str, worker_up: bool = False) -> list[str]:
    """Processes of the case's home; a worker that is meant to go on running is not counted."""
    found = processes_with(f"JOBCLOUD_HOME={home}")
    return [p for p in found if not (worker_up and any(w in p for w in WORKER_PROCESSES))]


def settle(stage: Stage, job_id: str, home: str, t0: float, timeout: float = 120, worker_up: bool = False) -> tuple[str, float]:
    """Wait until the run is final, its containers are gone and no process of ``home`` lives
    (but a worker, with ``worker_up``); the final state and the seconds since ``t0`` (the fault)."""
    state = wait_for(lambda: final_state(stage, job_id), timeout, f"job {job_id} to end", every=0.1)
    wait_for(lambda: not containers_of(stage.engine_host, job_id), timeout, f"job {job_id}'s containers to go", every=0.1)
    wait_for(
        lambda: not job_processes(home, worker_up), timeout, f"processes of {home} to end: {job_processes(home, worker_up)}", every=0.1
    )
    return state, time.monotonic() - t0


def leftovers(stage: Stage, job_id: str, home: str, worker_up: bool = False) -> str:
    """What a settled job left: containers, processes, work folders, half-written files."""
    left = [f"container {c.id[:12]}" for c in containers_of(stage.engine_host, job_id)]
    left += [f"process {p}" for p in job_processes(home, worker_up)]
    work = Path(home) / "work" / job_id
    if work.exists():
        left.append(f"work folder {work}")
    prefix = stage.store() / "jobs" / job_id
    if prefix.exists():
        left += [f"temporary file {p}" for p in prefix.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    return ", ".join(left) or "none"


def manifest(stage: Stage, job_id: str) -> dict[str, Any]:
    path = stage.store() / "jobs" / job_id / "manifest.json"
    assert path.is_file(), f"job {job_id} has no manifest"
    return json.loads(path.read_text())


def kill(pid: int, sig: int = signal.SIGKILL) -> float:
    """Send ``sig`` to ``pid``; the monotonic time of the fault."""
    os.kill(pid, sig)
    return time.monotonic()


def python() -> str:
    return sys.executable
