"""A throwaway PostgreSQL cluster for tests and benches: initdb in a temporary folder, a free
port on 127.0.0.1, one database, a password login; stopped and deleted by `stop()`.

PostgreSQL comes from Debian's packages (`scripts/setup.sh` installs them). Its binaries live
in /usr/lib/postgresql/<major>/bin, which is not on PATH. PostgreSQL refuses to run as root,
so as root every server command runs as the `postgres` user (`runuser`), and the cluster's
folder is made under /tmp (a pytest tmp_path is root-only, so `postgres` could not enter it).
Nothing touches Debian's own cluster (`pg_ctlcluster 15 main`) or any other server.

``host`` and ``prefix`` put the server elsewhere: it listens on ``host`` (127.0.0.1 by
default), and every command (the server and its clients: initdb, pg_isready, createdb) runs
after ``prefix``, e.g. `ip netns exec NS` for a server inside a network namespace
(tests/cluster). `restart()` stops the server and starts it again on the same data and port.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Ports below 55536: other sessions' servers may hold ports above (SeaweedFS's +10000 twins).
from tests.receivers import free_port

USER = "jobcloud"
PASSWORD = "jobcloud-test"
DATABASE = "prefect"


def pg_bin(name: str) -> str:
    """Path of PostgreSQL program ``name`` (the newest installed major, else PATH)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if not on_path:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: apt-get install postgresql (scripts/setup.sh does)")
    return on_path


def _as_server_user() -> list[str]:
    """The prefix that runs a command as a user PostgreSQL accepts (none unless root)."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class Postgres:
    """One `postgres` server on a free port with database DATABASE owned by USER."""

    port: int = field(default_factory=free_port)
    data_dir: Path | None = None
    proc: subprocess.Popen | None = None
    host: str = "127.0.0.1"
    prefix: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL Prefect's server takes (PREFECT_API_DATABASE_CONNECTION_URL)."""
        return f"postgresql+asyncpg://{USER}:{PASSWORD}@{self.host}:{self.port}/{DATABASE}"

    def start(self, timeout: float = 60) -> Postgres:
        """initdb, start the server, create the database; raises if any step fails (also on
        Ctrl-C), leaving no process or folder behind."""
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> Postgres:
        self.data_dir = Path(tempfile.mkdtemp(prefix="jobcloud-pg-"))
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        cluster = self.data_dir / "cluster"
        pwfile = self.data_dir / "pw"
        pwfile.write_text(PASSWORD + "\n")
        os.chmod(pwfile, 0o644)  # initdb runs as `postgres` and must read it
        subprocess.run(
            [*self.prefix, *_as_server_user(), pg_bin("initdb"), "-D", str(cluster), "-U", USER, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        pwfile.unlink()
        self._launch(timeout)
        subprocess.run(
            [*self.prefix, pg_bin("createdb"), "-h", self.host, "-p", str(self.port), "-U", USER, DATABASE],
            check=True, capture_output=True, text=True, env={**os.environ, "PGPASSWORD": PASSWORD},
        )  # fmt: skip
        return self

    def _launch(self, timeout: float) -> None:
        """Start the server on the cluster in data_dir and wait until it accepts connections."""
        assert self.data_dir is not None
        log = open(self.data_dir / "postgres.log", "ab")
        # Only TCP on ``host``; the Unix socket in our own folder, so that no other cluster's
        # socket in /var/run/postgresql is touched. Its own session: stop() signals the group.
        self.proc = subprocess.Popen(
            [*self.prefix, *_as_server_user(), pg_bin("postgres"), "-D", str(self.data_dir / "cluster"), "-p", str(self.port),
             "-h", self.host, "-k", str(self.data_dir), "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start on port {self.port}:\n{self.log_tail()}")
            time.sleep(0.2)

    def restart(self, timeout: float = 60, down_s: float = 0) -> Postgres:
        """Stop the server (fast shutdown: open sessions are ended), keep it down ``down_s``
        from the stop's start at least, and start it again on the same data and port; clients
        see their connections drop."""
        t0 = time.monotonic()
        self._stop_server()
        time.sleep(max(0.0, t0 + down_s - time.monotonic()))
        self._launch(timeout)
        return self

    def _ready(self) -> bool:
        probe = subprocess.run(
            [*self.prefix, pg_bin("pg_isready"), "-h", self.host, "-p", str(self.port), "-U", USER, "-q"], capture_output=True
        )
        return probe.returncode == 0

    def log_tail(self, n: int = 30) -> str:
        if self.data_dir is None:
            return ""
        try:
            return "\n".join((self.data_dir / "postgres.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Fast shutdown (SIGINT: open sessions are ended), SIGKILL if it hangs; then delete
        the cluster."""
        self._stop_server()
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def _stop_server(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 2)
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        self.proc = None

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
