"""Start a real `prefect server start` and real `prefect worker start` processes, and stop them.

Used by the end-to-end tests and `bench/dispatch.py`; also a recipe for scripts. Every process
runs in its own session so that stopping it stops its children (the worker's flow runs) too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from jobcloud.blocks.errors import JobCloudError

# Fast pickup: the stock process worker asks for new runs every 10 s; these poll every second
# (the `jobcloud` worker type does so by default; the settings matter for `--type process`).
FAST_WORKER_ENV = {
    "PREFECT_WORKER_QUERY_SECONDS": "1",
    "PREFECT_WORKER_PREFETCH_SECONDS": "10",
}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HEALTH_TIMEOUT_S = 10.0


def healthy(api_url: str, timeout: float = HEALTH_TIMEOUT_S) -> bool:
    """True if the Prefect API answers /health within ``timeout`` s.

    Not 1 s: a team server busy with hundreds of submissions and a few workers on a small host
    answered /health in more than a second, and `jobcloud run` then refused to submit, saying
    the server did not answer. A server that is down refuses the connection at once anyway.
    """
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


@dataclass
class Proc:
    """A started process, its log file and how to stop it."""

    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the process group, then SIGKILL what is left after ``timeout`` s."""
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(5)

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def spawn(args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None, prefix: list[str] | None = None) -> Proc:
    """Start ``args`` in its own session, output to ``log``; ``prefix`` goes before the command
    (e.g. `ip netns exec NS`: the process runs in another network namespace)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        popen = subprocess.Popen(
            [*(prefix or []), *args],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
        )
    return Proc(popen, log)


def migrated_database(folder: Path, timeout: float = 180) -> Path:
    """A fresh SQLite database of this Prefect's schema in ``folder`` (`prefect server database
    reset`, no server started): a seed for `PrefectServer.seed_database`."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(folder)
    args = [sys.executable, "-m", "prefect", "server", "database", "reset", "-y"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    database = folder / "prefect.db"
    if proc.returncode != 0 or not database.exists():
        raise JobCloudError(f"could not make a Prefect database in {folder}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return database


@dataclass
class PrefectServer:
    """`prefect server start` in its own PREFECT_HOME, on a free port.

    Its database is SQLite in PREFECT_HOME unless ``database_url`` names another, e.g. a team
    server's PostgreSQL: `postgresql+asyncpg://USER:PASS@HOST:PORT/DB`. Only the server
    process gets that URL (clients and workers talk to the API, never to the database).

    A new SQLite server spends most of its start (about 10 of 17 s here) migrating an empty
    database: where `seed_database` names a migrated, unused one (`migrated_database`), a
    server whose home has no database yet starts from a copy of it instead.

    ``host``: the address it binds and clients use (127.0.0.1 by default; a host's own address
    for a server that workers on other hosts reach). ``prefix``: a command put before `prefect
    server start`, e.g. `ip netns exec NS` to run it in another network namespace.
    """

    seed_database: ClassVar[Path | None] = None

    home: Path
    port: int = field(default_factory=free_port)
    proc: Proc | None = None
    database_url: str | None = None
    host: str = "127.0.0.1"
    prefix: list[str] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment whose Prefect commands talk to this server."""
        env = {k: v for k, v in (base if base is not None else os.environ).items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_API_URL=self.api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_UI_API_URL=self.api_url,
        )
        return env

    def start(self, timeout: float = 120) -> PrefectServer:
        self.home.mkdir(parents=True, exist_ok=True)
        seed = PrefectServer.seed_database
        if seed is not None and not self.database_url and not (self.home / "prefect.db").exists():
            shutil.copy2(seed, self.home / "prefect.db")
        args = [sys.executable, "-m", "prefect", "server", "start", "--host", self.host, "--port", str(self.port)]
        env = self.env()
        if self.database_url:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.database_url
        self.proc = spawn(args, env, self.home / "server.log", prefix=self.prefix)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise JobCloudError(f"prefect server exited early:\n{self.proc.tail()}")
            if healthy(self.api_url):
                return self
            time.sleep(0.3)
        self.stop()
        raise JobCloudError(f"prefect server did not answer in {timeout} s:\n{self.proc.tail()}")

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_worker(
    server: PrefectServer,
    pool: str,
    env: dict[str, str],
    log: Path,
    fast: bool = True,
    name: str | None = None,
    extra_args: list[str] | None = None,
    cwd: Path | None = None,
    prefix: list[str] | None = None,
) -> Proc:
    """`prefect worker start --pool POOL` against ``server``.

    ``env`` is the worker host's environment (its PREFECT_* are replaced by ``server``'s). The
    flow runs' JobCloud settings (job store, catalog) come from the pool, which `jobcloud
    deploy` wrote; the engine from DOCKER_HOST or the host's default socket. ``fast`` adds
    `FAST_WORKER_ENV` (poll every second, also for a stock `--type process` worker); else
    Prefect's settings, or the `jobcloud` worker type's own 1 s, apply. ``cwd``: the folder the
    worker starts in (a Prefect project's, say). ``prefix``: a command put before the worker's,
    e.g. `ip netns exec NS` for a worker on another (namespaced) host.
    """
    wenv = server.env(env)
    if fast:
        wenv.update(FAST_WORKER_ENV)
    args = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool]
    if name:
        args += ["--name", name]
    args += extra_args or []
    return spawn(args, wenv, log, cwd=cwd, prefix=prefix)
