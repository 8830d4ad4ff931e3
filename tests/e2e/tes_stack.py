"""The services of a TES end-to-end test: a Prefect server, `jobcloud deploy`, a JobCloud cpu
worker and `jobcloud api serve`, on whatever job store the caller's environment names; each
one stopped on the way out, also after a failed start."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobcloud.deployments.server.processes import PrefectServer, Proc, start_worker
from tests.api_fixtures import KEYS
from tests.conftest import ROOT, Cli
from tests.e2e.api_process import serve_api, wait_answering


@contextmanager
def tes_services(tmp: Path, engine: str, env: dict[str, str], name: str) -> Iterator[tuple[str, Proc, Proc]]:
    """Start the services with the test API keys and ``env`` over this process's environment
    (its own JOBCLOUD_* dropped); yields the API's URL, the API and the worker."""
    keys = tmp / "keys.json"
    keys.write_text(json.dumps(KEYS))
    server = PrefectServer(home=tmp / "prefect-home")
    base = {
        **{k: v for k, v in os.environ.items() if not k.startswith("JOBCLOUD_")},
        "JOBCLOUD_STOP_GRACE_S": "1",
        "JOBCLOUD_HOME": str(tmp / "jc-home"),
        "JOBCLOUD_CONFIG": str(ROOT / "application_config.yaml"),
        "JOBCLOUD_API_KEYS_FILE": str(keys),
        "DOCKER_HOST": engine,
        "PYTHONPATH": str(ROOT),
        **env,
    }
    worker = api = None
    try:
        server.start()
        full = server.env(base)
        deployed = Cli(env=full, cwd=tmp)("deploy", "--prefect-yaml", str(ROOT / "prefect.yaml"))
        assert deployed.returncode == 0, deployed.stderr[-3000:]
        worker = start_worker(server, "cpu", full, tmp / "worker.log", name=name)
        api, url = serve_api(tmp, full, "api")
        wait_answering(api, url)
        yield url, api, worker
    finally:
        if api is not None:
            api.stop()
        if worker is not None:
            worker.stop()
        server.stop()
