"""The HTTP API end to end: `prefect server start`, `jobcloud deploy`, a real worker, and
`jobcloud api serve` (uvicorn) on a real port, driven with httpx as a front-end would: upload,
start, poll to Completed, download outputs, cancel a running job, and the Swiss AI flow
(/compute, task status, callbacks to a real local receiver). Every process started here is
stopped."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobcloud.deployments.server.processes import PrefectServer, Proc, start_worker
from tests.api_fixtures import KEYS, TOKENS
from tests.conftest import ROOT, Cli
from tests.e2e.api_process import serve_api, wait_answering
from tests.e2e.test_server_jobs import SLEEPER
from tests.receivers import HttpReceiver
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e
EXAMPLES = ROOT / "examples/linefit"


def _h(user: str) -> dict[str, str]:
    return {"authorization": f"Bearer {TOKENS[user]}"}


class ApiStack:
    def __init__(self, url: str, api: Proc, worker: Proc, store: Path) -> None:
        self.url, self.api, self.worker, self.store = url, api, worker, store
        self.http = httpx.Client(base_url=url, timeout=60)

    def wait_state(self, job_id: str, want: set[str], user: str = "alice", timeout: float = 240) -> dict[str, Any]:
        seen: list[str] = []

        def reached() -> dict[str, Any] | None:
            job = self.http.get(f"/jobs/{job_id}", headers=_h(user)).json()
            seen.append(job["state"])
            return job if job["state"] in want else None

        return wait_until(
            reached,
            timeout,
            interval=1,
            message=lambda: f"job {job_id} in {sorted(want)}, still {seen[-1]}; worker:\n{self.worker.tail()}\napi:\n{self.api.tail()}",
        )


@pytest.fixture(scope="module")
def stack(engine: str, images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiStack]:
    tmp = tmp_path_factory.mktemp("e2e-api")
    catalog = tmp / "application_config.yaml"
    catalog.write_text((ROOT / "application_config.yaml").read_text() + SLEEPER)
    keys = tmp / "keys.json"
    keys.write_text(json.dumps(KEYS))
    server = PrefectServer(home=tmp / "prefect-home")
    base = {
        **os.environ,
        "JOBCLOUD_HOME": str(tmp / "jc-home"),
        "JOBCLOUD_STORAGE": str(tmp / "store"),
        "JOBCLOUD_CONFIG": str(catalog),
        "JOBCLOUD_API_KEYS_FILE": str(keys),
        "DOCKER_HOST": engine,
        "PYTHONPATH": str(ROOT),
    }
    server.start()
    env = server.env(base)
    worker = api = None
    try:
        deployed = Cli(env=env, cwd=tmp)("deploy", "--prefect-yaml", str(ROOT / "prefect.yaml"))
        assert deployed.returncode == 0, deployed.stderr[-3000:]
        worker = start_worker(server, "cpu", env, tmp / "worker.log", name="e2e-api-cpu")
        api, url = serve_api(tmp, env, "api")
        wait_answering(api, url)
        yield ApiStack(url, api, worker, tmp / "store")
    finally:
        if api is not None:
            api.stop()
        if worker is not None:
            worker.stop()
        server.stop()


def _upload(stack: ApiStack, user: str, key: str, path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        r = stack.http.put(f"/files/{key}", content=fh, headers=_h(user))
    assert r.status_code == 201, r.text
    return r.json()


def test_upload_start_poll_download(stack: ApiStack) -> None:
    up = _upload(stack, "alice", "in/config.yaml", EXAMPLES / "config.yaml")
    assert up["size"] == (EXAMPLES / "config.yaml").stat().st_size
    _upload(stack, "alice", "in/points.csv", EXAMPLES / "points.csv")
    r = stack.http.post(
        "/jobs",
        json={
            "entrypoint": "linefit/v1/train",
            "config_id": "in/config.yaml",
            "data_ids": ["in/points.csv"],
            "env": {"LINEFIT_EPOCHS": "20"},
        },
        headers=_h("alice"),
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    assert stack.http.get(f"/jobs/{job_id}", headers=_h("bob")).status_code == 404
    job = stack.wait_state(job_id, {"Completed", "Failed", "Crashed", "Cancelled", "TimedOut"})
    assert job["state"] == "Completed", job
    assert job["manifest"]["exit_code"] == 0
    files = stack.http.get(f"/jobs/{job_id}/files", headers=_h("alice")).json()["files"]
    outputs = [f for f in files if f["path"].startswith("output/")]
    assert outputs, files
    for f in outputs:
        got = stack.http.get(f"/jobs/{job_id}/files/{f['path']}", headers=_h("alice"))
        assert got.status_code == 200
        assert got.content == (stack.store / "jobs" / job_id / f["path"]).read_bytes()
    logs = stack.http.get(f"/jobs/{job_id}/logs", headers=_h("alice")).json()
    assert any("Finished in state" in line["message"] for line in logs)
    mine = [j["id"] for j in stack.http.get("/jobs", headers=_h("alice")).json()]
    assert job_id in mine and job_id not in [j["id"] for j in stack.http.get("/jobs", headers=_h("bob")).json()]
    test_upload_start_poll_download.job_id = job_id  # type: ignore[attr-defined]


def test_cancel_a_running_job(stack: ApiStack) -> None:
    r = stack.http.post("/jobs", json={"entrypoint": "sleeper/v1/nap"}, headers=_h("alice"))
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    stack.wait_state(job_id, {"Running"})
    c = stack.http.post(f"/jobs/{job_id}/cancel", headers=_h("alice"))
    assert c.status_code == 200 and c.json()["state"] in ("Cancelled", "Cancelling"), c.text
    assert stack.wait_state(job_id, {"Cancelled", "Failed", "Crashed"}, timeout=60)["state"] == "Cancelled"


def test_swiss_ai_compute_with_callbacks(stack: ApiStack) -> None:
    train = getattr(test_upload_start_poll_download, "job_id", None)
    if train is None:
        pytest.fail("needs the train job of test_upload_start_poll_download")
    _upload(stack, "alice", "in/query.csv", EXAMPLES / "query.csv")
    receiver = HttpReceiver()
    try:
        task = {
            "task_id": "task-42",
            "data_in": ["in/query.csv"],
            "callback_url": receiver.url,
            "s3_infos": {"bucket": "ignored"},
            "parameters": {"artifact_ids": [f"jobs/{train}/artifact"]},
        }
        r = stack.http.post("/swiss/linefit/v1/predict/compute", json=task, headers=_h("alice"))
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "Task added to the queue"
        again = stack.http.post("/swiss/linefit/v1/predict/compute", json=task, headers=_h("alice"))
        assert again.status_code == 409
        last: list[dict[str, Any]] = []

        def ended() -> dict[str, Any] | None:
            last[:] = [stack.http.get("/swiss/linefit/v1/predict/tasks/task-42/status", headers=_h("alice")).json()]
            return last[0] if last[0]["status"] in ("finished", "error") else None

        status = wait_until(ended, 240, interval=1, message=lambda: f"task-42 to end: {last}")
        assert status["status"] == "finished", status
        assert status["data_out"] and all(k.startswith(f"jobs/{status['job_id']}/") for k in status["data_out"])
        assert stack.http.get("/swiss/linefit/v1/predict/tasks/task-42/status", headers=_h("bob")).status_code == 404
        updates = receiver.wait_for(2, timeout=30)
        assert all(u.method == "PATCH" for u in updates)
        # The last update is the final one, maybe after a few more.
        bodies = wait_until(
            lambda: (b := [u.json() for u in receiver.requests])[-1]["status"] == "finished" and b,
            15,
            interval=0.5,
            message=lambda: f"the callback's final update: {[u.json()['status'] for u in receiver.requests]}",
        )
        assert bodies[-1]["status"] == "finished" and bodies[-1]["job_id"] == status["job_id"]
    finally:
        receiver.stop()


def test_the_rate_limit_holds_across_api_processes(tmp_path: Path) -> None:
    """Two servers sharing JOBCLOUD_HOME, one of them with two uvicorn workers (three API
    processes): a user's requests count together, wherever they land."""
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(KEYS))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("JOBCLOUD_")},
        "JOBCLOUD_HOME": str(tmp_path / "jc-home"),
        "JOBCLOUD_STORAGE": str(tmp_path / "store"),
        "JOBCLOUD_CONFIG": str(ROOT / "application_config.yaml"),
        "JOBCLOUD_API_KEYS_FILE": str(keys),
        "JOBCLOUD_API_RATE_PER_MINUTE": "8",
        "PYTHONPATH": str(ROOT),
    }
    servers = [serve_api(tmp_path, env, "api-a", "--workers", "2"), serve_api(tmp_path, env, "api-b")]
    try:
        for proc, url in servers:
            wait_answering(proc, url, timeout=90)
        (a, url_a), (b, url_b) = servers
        # Fresh connections each time, so that the two workers of A both get some.
        codes = [httpx.get(f"{url}/files", headers=_h("alice"), timeout=30).status_code for url in [url_a, url_b] * 6]
        assert codes[:8] == [200] * 8 and codes[8:] == [429] * 4, codes
        limited = httpx.get(f"{url_b}/files", headers=_h("alice"), timeout=30)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert httpx.get(f"{url_a}/files", headers=_h("bob"), timeout=30).status_code == 200  # bob counts apart
        assert "limits.sqlite" in os.listdir(tmp_path / "jc-home" / "api")
        workers = subprocess.run(["pgrep", "-g", str(a.popen.pid)], capture_output=True, text=True).stdout.split()
        assert len(workers) >= 3, f"--workers 2: a supervisor and two workers, got {workers}\n{a.tail()}"
    finally:
        for proc, _ in servers:
            proc.stop()


def test_a_job_array_over_http(stack: ApiStack, tmp_path: Path) -> None:
    _upload(stack, "alice", "in/config.yaml", EXAMPLES / "config.yaml")
    for i in range(3):
        _upload(stack, "alice", f"sweep/p{i}.csv", EXAMPLES / "points.csv")
    base = {"entrypoint": "linefit/v1/train", "config_id": "in/config.yaml", "env": {"LINEFIT_EPOCHS": "5"}}
    r = stack.http.post("/jobs", json={**base, "array": {"over": "sweep", "parallel": 2}}, headers=_h("alice"))
    assert r.status_code == 201, r.text
    started = r.json()
    assert started["elements"] == 3 and started["runs"] == [started["id"]]
    job = stack.wait_state(started["id"], {"Completed", "Failed", "Crashed", "Cancelled"})
    assert job["state"] == "Completed", job
    assert job["array"]["counts"] == {"Completed": 3} and len(job["array"]["elements"]) == 3
    assert (stack.store / "jobs" / started["id"] / "2" / "manifest.json").is_file()
    assert stack.http.get(f"/jobs/{started['id']}", headers=_h("bob")).status_code == 404
    # A bad row: 400 naming the row and the field, nothing submitted.
    before = len(stack.http.get("/jobs", headers=_h("alice")).json())
    for rows, words in (
        ([{"data_ids": ["sweep/p0.csv"]}, {"data_ids": ["../bob/x.csv"]}], ["array row 2", "data_ids"]),
        ([{"colour": "red"}], ["array row 1", "colour"]),
        ([{"data_ids": ["sweep/missing.csv"]}], ["array row 1", "missing.csv"]),
    ):
        r = stack.http.post("/jobs", json={**base, "array": {"elements": rows}}, headers=_h("alice"))
        assert r.status_code in (400, 404), r.text
        for word in words:
            assert word in r.text, r.text
    assert len(stack.http.get("/jobs", headers=_h("alice")).json()) == before
