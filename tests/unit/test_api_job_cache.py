"""GET /jobs/{id} from the API's job cache: an ended job is answered from memory (a second GET
asks Prefect nothing), a live one at most once per JOBCLOUD_API_JOB_REFRESH_S however many
clients poll it at once, owners are still checked, and the body is byte for byte what FastAPI
itself sends for the route's response model. The Prefect client is a fake that counts its
calls (the only mock: the real client's calls are what is counted); the store is real."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from jobcloud.blocks.store.job_store import JobStore
from jobcloud.deployments.http_api.app import create_app
from jobcloud.deployments.http_api.auth import KeyRing
from jobcloud.deployments.http_api.services import Backend
from jobcloud.deployments.http_api.settings import ApiSettings
from jobcloud.deployments.jobs.show import JobInfo, show_job
from tests.api_fixtures import KEYS, auth


class FakePrefect:
    """The calls of Prefect's sync client that GET /jobs/{id} makes, counted."""

    def __init__(self, delay: float = 0.0) -> None:
        self.runs: dict[uuid.UUID, Any] = {}
        self.reads = 0
        self.task_reads = 0
        self.delay = delay
        self._lock = threading.Lock()

    def add(self, owner: str, state: Any) -> str:
        from prefect.client.schemas.objects import FlowRun

        started = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
        run = FlowRun(
            id=uuid.uuid4(),
            name="brave-otter",
            flow_id=uuid.uuid4(),
            tags=["app:linefit", "version:v1", "entrypoint:train", f"user:{owner}"],
            state=state,
            parameters={"data_ids": ["users/alice/points.csv"], "env": {"LINEFIT_EPOCHS": "5"}, "note": "ünïcode ✓"},
            created=started - timedelta(seconds=3),
            start_time=started,
            total_run_time=timedelta(seconds=1.25),
        )
        self.runs[run.id] = run
        return str(run.id)

    def read_flow_run(self, uid: uuid.UUID) -> Any:
        from prefect.exceptions import ObjectNotFound

        with self._lock:
            self.reads += 1
        time.sleep(self.delay)
        if uid not in self.runs:
            raise ObjectNotFound(http_exc=Exception("404"))
        return self.runs[uid]

    def read_task_runs(self, **_: Any) -> list[Any]:
        with self._lock:
            self.task_reads += 1
        return []

    def __exit__(self, *exc: object) -> None:  # Backend.close at the app's end
        pass


def _app(tmp_path: Path, fake: FakePrefect, **settings: Any) -> tuple[FastAPI, JobStore]:
    store = JobStore(str(tmp_path / "store"))
    backend = Backend(store)
    backend._client = fake  # the shared client, as Backend.client would open it
    app = create_app(ApiSettings(state_dir=tmp_path / "state", **settings), KeyRing.parse(json.dumps(KEYS), "test"), backend)
    return app, store


def test_an_ended_job_is_answered_from_memory(tmp_path: Path) -> None:
    from prefect.states import Completed

    fake = FakePrefect()
    app, store = _app(tmp_path, fake)
    job = fake.add("alice", Completed(message="done"))
    store.write_bytes(f"jobs/{job}/manifest.json", json.dumps({"exit_code": 0, "outputs": []}).encode())
    with TestClient(app) as client:
        first = client.get(f"/jobs/{job}", headers=auth("alice"))
        assert first.status_code == 200, first.text
        assert first.json()["state"] == "Completed" and first.json()["manifest"] == {"exit_code": 0, "outputs": []}
        assert fake.reads == 1
        for _ in range(5):
            again = client.get(f"/jobs/{job}", headers=auth("alice"))
            assert again.content == first.content
        assert client.get(f"/jobs/{job.upper()}", headers=auth("alice")).content == first.content  # the same job
        assert fake.reads == 1  # no Prefect query after the first
        # The owner is still checked on every answer from memory; an admin sees it.
        other = client.get(f"/jobs/{job}", headers=auth("bob"))
        assert other.status_code == 404 and other.json()["error"]["message"] == f"no job {job}"
        assert client.get(f"/jobs/{job}", headers=auth("root")).content == first.content
        assert fake.reads == 1


def test_a_live_job_is_asked_at_most_once_per_refresh(tmp_path: Path) -> None:
    from prefect.states import Running

    fake = FakePrefect(delay=0.2)  # a slow server: the 50 requests below all arrive during one query
    app, _ = _app(tmp_path, fake, job_refresh_s=0.5)
    job = fake.add("alice", Running())

    async def poll(n: int) -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await asyncio.gather(*(client.get(f"/jobs/{job}", headers=auth("alice")) for _ in range(n)))

    answers = asyncio.run(poll(50))
    assert {r.status_code for r in answers} == {200}
    assert {r.json()["state"] for r in answers} == {"Running"}
    assert fake.reads == 1 and fake.task_reads == 1  # one run read (and its phase) for 50 requests
    asyncio.run(poll(10))
    assert fake.reads == 1  # still fresh
    time.sleep(0.6)
    from prefect.states import Completed

    fake.runs[uuid.UUID(job)].state = Completed()
    later = asyncio.run(poll(10))
    assert fake.reads == 2 and {r.json()["state"] for r in later} == {"Completed"}  # refreshed once, then from memory


def test_unknown_and_malformed_ids_are_404_and_not_kept(tmp_path: Path) -> None:
    fake = FakePrefect()
    app, _ = _app(tmp_path, fake)
    absent = str(uuid.uuid4())
    with TestClient(app) as client:
        for _ in range(2):
            r = client.get(f"/jobs/{absent}", headers=auth("alice"))
            assert r.status_code == 404 and r.json()["error"]["message"] == f"no job {absent}"
        assert fake.reads == 2  # a job that does not exist yet is not remembered as absent
        bad = client.get("/jobs/not-a-uuid", headers=auth("alice"))
        assert bad.status_code == 404 and fake.reads == 2  # refused without asking Prefect


@pytest.mark.parametrize("final", [True, False])
def test_the_body_is_what_fastapi_itself_sends(tmp_path: Path, final: bool) -> None:
    """The answer kept as bytes equals the route's answer before the cache: FastAPI
    serializing `show_job`'s JobInfo through response_model=JobInfo."""
    from prefect.states import Completed, Pending

    fake = FakePrefect()
    app, store = _app(tmp_path, fake)
    job = fake.add("alice", Completed(message="all good") if final else Pending())
    store.write_bytes(f"jobs/{job}/manifest.json", json.dumps({"exit_code": 0, "size": 1.5e-7, "name": "é"}).encode())

    reference = FastAPI()

    @reference.get("/jobs/{job_id}", response_model=JobInfo)
    def show(job_id: str) -> JobInfo:
        return show_job(fake, job_id, store)

    with TestClient(app) as client, TestClient(reference) as ref:
        ours, theirs = client.get(f"/jobs/{job}", headers=auth("alice")), ref.get(f"/jobs/{job}")
    assert ours.content == theirs.content
    assert ours.headers["content-type"] == theirs.headers["content-type"]
    assert ours.headers["content-length"] == theirs.headers["content-length"]
