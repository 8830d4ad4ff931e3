"""A real `jobcloud api serve` process for end-to-end tests: started on a free port, waited for
until it answers `/status`, its log beside the test's other logs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx

from jobcloud.deployments.server.processes import Proc
from tests.conftest import JOBCLOUD
from tests.receivers import free_port
from tests.waiting import wait_until


def serve_api(tmp: Path, env: dict[str, str], name: str, *extra: str) -> tuple[Proc, str]:
    """`jobcloud api serve` on a free port (plus ``extra`` options), started, not yet answering."""
    port = free_port()
    log = tmp / f"{name}.log"
    with open(log, "ab") as fh:
        popen = subprocess.Popen(
            [*JOBCLOUD, "api", "serve", "--port", str(port), *extra],
            env=env,
            cwd=tmp,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Proc(popen, log), f"http://127.0.0.1:{port}"


def wait_answering(api: Proc, url: str, timeout: float = 60) -> None:
    """Until the API at ``url`` answers `/status`; fails at once, with its log, if it exited."""

    def answers() -> bool:
        assert api.alive(), f"the API exited before it answered:\n{api.tail()}"
        return httpx.get(f"{url}/status", timeout=2).status_code == 200

    wait_until(answers, timeout, interval=0.3, ignore=(httpx.HTTPError,), message=lambda: f"the API to start:\n{api.tail()}")
