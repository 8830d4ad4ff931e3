"""`jobcloud run --no-wait` against a Prefect server that answers /health but refuses every
other request with 503 (a SQLite server buried in submissions): it tries again until
JOBCLOUD_SUBMIT_PATIENCE_S is spent, then exits 1 with one line naming the server and the
setting, never a traceback. The server is a stdlib HTTP server in this process: no Prefect."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
CATALOG = """
hello:
  v1:
    say:
      app: {cmd: ["echo hello"]}
      handler: {image_url: "localhost/jobcloud/linefit:1"}
"""


class Busy(BaseHTTPRequestHandler):
    seen: list[str] = []

    def _answer(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        healthy = self.path.endswith("/health")
        body = b"true" if healthy else b'{"exception_message": "Service Unavailable"}'
        self.send_response(200 if healthy else 503)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def busy_server() -> Iterator[str]:
    Busy.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


def test_a_refused_submission_exits_1_with_one_line(busy_server: str, tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PREFECT_API_URL": busy_server,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_CLIENT_MAX_RETRIES": "0",  # Prefect's own retries would take 62 s here
        "JOBCLOUD_SUBMIT_PATIENCE_S": "6",  # the first try alone imports for ~2 s
        "JOBCLOUD_HOME": str(tmp_path / "jc"),
        "JOBCLOUD_STORAGE": str(tmp_path / "store"),
        "JOBCLOUD_CONFIG": str(tmp_path / "catalog.yaml"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "jobcloud.deployments.cli", "run", "hello/v1/say", "--no-wait"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    line = lines[0]
    assert busy_server in line and "JOBCLOUD_SUBMIT_PATIENCE_S" in line and "503 Service Unavailable" in line, line
    tries = [r for r in Busy.seen if "/deployments/name/" in r]
    assert len(tries) > 1, Busy.seen  # it did try again
