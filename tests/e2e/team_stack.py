"""A team server stack for `test_team_postgres.py` and `bench/throughput.py`: PostgreSQL (or
SQLite), a real `prefect server start`, `jobcloud deploy --limit cpu=N` of a one-entry catalog
with a tiny job, and any number of real `prefect worker start --pool cpu` (type `jobcloud`).

`tests/cluster/rig.py` runs the same stack on a host of its own (a network namespace): see the
fields ``host``, ``prefix``, ``storage``, ``extra_env`` and ``catalog``.

Also what both check afterwards: every job's manifest from the job store, the flow runs from
Prefect, and the largest number of runs that overlapped in time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from jobcloud.deployments.server.processes import PrefectServer, Proc, start_worker
from tests.integration.postgres import Postgres, free_port

ROOT = Path(__file__).resolve().parents[2]
JOBCLOUD = [sys.executable, "-m", "jobcloud.deployments.cli"]
ENTRY = "tiny/v1/echo"
DEPLOYMENT = "tiny-echo/tiny-v1-echo"  # Prefect's <flow>/<deployment> name of ENTRY
# The tiny job: busybox (1 MB, built from the host's busybox-static) echoes one line.
CATALOG = """
tiny:
  v1:
    echo:
      description: A tiny job for the team-server test and the throughput bench.
      app: {cmd: ["echo tiny"]}
      handler:
        image_url: "localhost/jobcloud/busybox:1"
        files_up: {output: output, log: log}
      aws_resources:
        hardware: {MEMORY: 64, VCPU: 1, GPU: 0}
        timeout: 300
"""


@dataclass
class TeamStack:
    """PostgreSQL (``database="postgresql"``) or SQLite, a Prefect server, the deployment of
    ENTRY on pool `cpu` limited to ``limit`` runs at once, and workers started on demand.

    By default everything runs here, on 127.0.0.1, with the job store in ``tmp``. ``host`` and
    ``prefix``: the Prefect server binds ``host`` and both it and PostgreSQL (on that host's
    127.0.0.1) run after ``prefix`` (`ip netns exec NS`). ``storage``: another job store URL
    (s3://...); ``extra_env``: more settings of every command (the store's AWS_* variables);
    ``catalog``: the catalog's text (CATALOG)."""

    tmp: Path
    docker_host: str
    database: str = "postgresql"
    limit: int = 8
    postgres: Postgres | None = None
    server: PrefectServer | None = None
    workers: list[Proc] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    started: int = 0  # workers started so far: each gets a new name
    host: str = "127.0.0.1"
    prefix: list[str] = field(default_factory=list)
    storage: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    catalog: str = CATALOG

    @property
    def store(self) -> Path:
        return self.tmp / "store"

    def start(self) -> TeamStack:
        self.tmp.mkdir(parents=True, exist_ok=True)
        catalog = self.tmp / "application_config.yaml"
        catalog.write_text(self.catalog)
        url = None
        if self.database == "postgresql":
            self.postgres = Postgres(prefix=self.prefix)  # set first: stop() cleans up after a failed start too
            url = self.postgres.start().url
        self.server = PrefectServer(home=self.tmp / "prefect-home", port=free_port(), database_url=url, host=self.host, prefix=self.prefix)
        self.server.start(timeout=180)
        base = {
            **os.environ,
            "JOBCLOUD_HOME": str(self.tmp / "jc-home"),
            "JOBCLOUD_STORAGE": self.storage or str(self.store),
            "JOBCLOUD_CONFIG": str(catalog),
            "DOCKER_HOST": self.docker_host,
            "PYTHONPATH": str(ROOT),
            **self.extra_env,
        }
        self.env = self.server.env(base)
        self.cli("deploy", "--limit", f"cpu={self.limit}", "--prefect-yaml", str(self.tmp / "none.yaml"))
        return self

    def cli(self, *args: str, timeout: float = 300) -> str:
        """`jobcloud ARGS` as a user types it; its stdout (raises on a non-zero exit)."""
        return checked([*JOBCLOUD, *args], self.env, self.tmp, timeout)

    def prefect(self, *args: str, timeout: float = 300) -> str:
        """`prefect ARGS` against this server; its stdout."""
        return checked([sys.executable, "-m", "prefect", *args], self.env, self.tmp, timeout)

    def start_workers(self, n: int) -> None:
        """``n`` more `prefect worker start --pool cpu` (the pool's type: `jobcloud`)."""
        assert self.server is not None
        for _ in range(n):
            name = f"team-{self.started}"
            self.started += 1
            self.workers.append(start_worker(self.server, "cpu", self.env, self.tmp / f"{name}.log", name=name))

    def wait_workers_online(self, client: Any, timeout: float = 120) -> None:
        """Until the server lists every running worker as online (it has polled for work)."""
        wanted = {w.log.stem for w in self.workers}
        deadline = time.monotonic() + timeout
        while True:
            online = {w.name for w in client.read_workers_for_work_pool("cpu") if w.status == "ONLINE"}
            if wanted <= online:
                return
            dead = [w.log.name for w in self.workers if not w.alive()]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"workers not online: {sorted(wanted - online)}, exited: {dead}\n{self.worker_logs()}")
            time.sleep(0.5)

    def stop_workers(self) -> None:
        """Stop every worker at once (each may take its stop grace)."""
        threads = [threading.Thread(target=w.stop) for w in self.workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.workers = []

    def stop(self) -> None:
        self.stop_workers()
        if self.server is not None:
            self.server.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def worker_logs(self, n: int = 30) -> str:
        return "\n".join(f"--- {w.log.name}\n{w.tail(n)}" for w in self.workers)

    def manifest(self, job_id: str) -> dict[str, Any] | None:
        path = self.store / "jobs" / job_id / "manifest.json"
        return json.loads(path.read_text()) if path.exists() else None

    def manifests(self) -> dict[str, dict[str, Any]]:
        """Every manifest in the job store, by the folder (job id) it lies in."""
        found = {}
        for path in sorted((self.store / "jobs").glob("*/manifest.json")):
            found[path.parent.name] = json.loads(path.read_text())
        return found


def checked(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> str:
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[2:])}: rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def flow_runs(client: Any, deployment_filter: Any) -> list[Any]:
    """Every flow run the filter matches, page by page (the server returns at most 200 at once)."""
    runs: list[Any] = []
    while True:
        page = client.read_flow_runs(deployment_filter=deployment_filter, offset=len(runs), limit=200)
        runs += page
        if len(page) < 200:
            return runs


def max_overlap(intervals: Iterable[tuple[datetime, datetime]]) -> int:
    """The most intervals that hold at one instant (one that ends as another starts: not both)."""
    events = []
    for start, end in intervals:
        events += [(start, 1), (end, -1)]
    events.sort(key=lambda e: (e[0], e[1]))  # at a tie the end (-1) comes first
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def parse_time(value: str) -> datetime:
    """A manifest's ISO timestamp."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
