"""POST /tasks's create path (deployments/http_api/tes/tasks.py, rules.py): the deployment id read
once per process and read again when it went stale, at most CREATE_CONCURRENCY creates in flight,
held only for the request, one idempotency key for every attempt, a run made by an attempt whose
answer was lost found before a refusal is answered; and the TES rules kept until the catalog
changes. Fakes only: no server, no sleep."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

from jobcloud.blocks.settings import ApiSettings
from jobcloud.deployments.http_api.tes import rules as rules_module
from jobcloud.deployments.http_api.tes.rules import TesRules
from jobcloud.deployments.http_api.tes.tasks import DeploymentIds, create_task
from jobcloud.deployments.jobs.landing import SubmitRefusedError
from jobcloud.deployments.jobs.submit import DeploymentMissingError

API = "http://prefect.example:4200/api"
PLAN = SimpleNamespace(gpu=0, model_dump=lambda mode: {"executors": []})
DOC: dict[str, Any] = {"name": "t", "executors": [{"image": "alpine", "command": ["true"]}]}


def status_error(code: int) -> PrefectHTTPStatusError:
    request = httpx.Request("POST", f"{API}/deployments/x/create_flow_run")
    return PrefectHTTPStatusError.from_httpx_error(
        httpx.HTTPStatusError(f"{code}", request=request, response=httpx.Response(code, request=request))
    )


class Client:
    """A Prefect client with one deployment (``deployment_ids`` its id at each read: a new one
    after a redeploy) whose creates raise ``errors`` one per call, then make a run (one per
    idempotency key, as the server does)."""

    def __init__(self, deployment_ids: list[UUID | None] | None = None, errors: list[BaseException] | None = None) -> None:
        self.api_url = API
        self.deployment_ids = deployment_ids or [uuid4()]
        self.errors = list(errors or [])
        self.reads = 0
        self.creates: list[tuple[UUID, dict[str, Any]]] = []
        self.runs: list[Any] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.create_s = 0.0

    def read_deployment_by_name(self, name: str) -> Any:
        found = self.deployment_ids[min(self.reads, len(self.deployment_ids) - 1)]
        self.reads += 1
        if found is None:
            raise ObjectNotFound(http_exc=Exception(name))
        return SimpleNamespace(id=found)

    def create_flow_run_from_deployment(self, deployment_id: UUID, **kwargs: Any) -> Any:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(self.create_s)
            with self.lock:
                self.creates.append((deployment_id, kwargs))
                if self.errors:
                    raise self.errors.pop(0)
                same = [r for r in self.runs if r.idempotency_key == kwargs["idempotency_key"]]
                if same:  # the server's idempotency: the run it made for this key
                    return same[0]
                run = SimpleNamespace(id=uuid4(), idempotency_key=kwargs["idempotency_key"])
                self.runs.append(run)
                return run
        finally:
            with self.lock:
                self.in_flight -= 1

    def read_flow_runs(self, flow_run_filter: Any, limit: int) -> list[Any]:
        keys = flow_run_filter.idempotency_key.any_
        return [r for r in self.runs if r.idempotency_key in keys][:limit]


def no_wait_landing(attempts: int) -> Any:
    """`land` without sleeping: calls the attempt up to ``attempts`` times while it raises a 503,
    then gives up as `land` does when its patience is spent."""

    def landing(attempt: Any, api_url: str, patience_s: float) -> Any:
        for n in range(attempts):
            try:
                return attempt()
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != 503 or n == attempts - 1:
                    raise SubmitRefusedError(api_url, n + 1, 0, patience_s, "503", uncertain=True) from exc
        raise AssertionError("unreachable")

    return landing


def test_the_deployment_id_is_read_once_per_process() -> None:
    client, ids = Client(), DeploymentIds()
    for _ in range(3):
        create_task(client, "alice", "t", DOC, PLAN, ids=ids)
    assert client.reads == 1 and len(client.creates) == 3
    assert {d for d, _ in client.creates} == {client.deployment_ids[0]}


def test_a_stale_id_is_read_again_and_the_create_made_once() -> None:
    old, new = uuid4(), uuid4()
    client, ids = Client([old, new], errors=[status_error(404)]), DeploymentIds()
    run = create_task(client, "alice", "t", DOC, PLAN, ids=ids)
    assert [d for d, _ in client.creates] == [old, new] and client.runs == [run]
    create_task(client, "alice", "t", DOC, PLAN, ids=ids)
    assert client.reads == 2  # the new id is kept


def test_a_deleted_deployment_is_the_operators_400() -> None:
    client, ids = Client([uuid4(), None], errors=[status_error(404)]), DeploymentIds()
    with pytest.raises(DeploymentMissingError, match="jobcloud deploy"):
        create_task(client, "alice", "t", DOC, PLAN, ids=ids)
    with pytest.raises(DeploymentMissingError):
        create_task(Client([None]), "alice", "t", DOC, PLAN, ids=DeploymentIds())


def test_a_404_with_a_fresh_id_is_not_retried_forever() -> None:
    client = Client([uuid4(), uuid4()], errors=[status_error(404), status_error(404)])
    with pytest.raises(PrefectHTTPStatusError):
        create_task(client, "alice", "t", DOC, PLAN, ids=DeploymentIds())
    assert len(client.creates) == 2 and not client.runs


def test_ids_are_kept_per_server() -> None:
    ids, here, there = DeploymentIds(), Client(), Client()
    there.api_url = "http://elsewhere:4200/api"
    assert ids.get(here, "f/d") == here.deployment_ids[0] and ids.get(there, "f/d") == there.deployment_ids[0]
    ids.forget(here, "f/d", uuid4())  # not the id it holds: kept
    assert ids.get(here, "f/d") == here.deployment_ids[0] and here.reads == 1


def test_creates_in_flight_are_bounded_by_the_gate() -> None:
    client, ids = Client(), DeploymentIds()
    client.create_s = 0.02
    gate = threading.BoundedSemaphore(2)
    threads = [
        threading.Thread(target=create_task, args=(client, "alice", "t", DOC, PLAN), kwargs={"ids": ids, "gate": gate}) for _ in range(12)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(client.runs) == 12 and client.most_in_flight == 2


def test_the_gate_is_not_held_across_retries_and_the_key_is_the_same() -> None:
    gate = threading.BoundedSemaphore(1)
    free_between_tries: list[bool] = []

    def free() -> bool:
        if gate.acquire(blocking=False):
            gate.release()
            return True
        return False

    def landing(attempt: Any, api_url: str, patience_s: float) -> Any:
        for _ in range(3):
            try:
                return attempt()
            except PrefectHTTPStatusError:
                free_between_tries.append(free())

    client = Client(errors=[status_error(503), status_error(503)])
    run = create_task(client, "alice", "t", DOC, PLAN, ids=DeploymentIds(), gate=gate, landing=landing)
    assert free_between_tries == [True, True] and client.runs == [run]
    assert len({kw["idempotency_key"] for _, kw in client.creates}) == 1


def test_a_run_made_by_an_unanswered_try_is_answered_not_refused() -> None:
    client = Client()
    made = client.create_flow_run_from_deployment

    def answer_lost(deployment_id: UUID, **kwargs: Any) -> Any:
        made(deployment_id, **kwargs)  # made on the server, every try (the same run: one key)...
        raise status_error(503)  # ...but what reached the API was a refusal (a proxy's)

    client.create_flow_run_from_deployment = answer_lost  # type: ignore[method-assign]
    run = create_task(client, "alice", "t", DOC, PLAN, ids=DeploymentIds(), landing=no_wait_landing(3))
    assert client.runs == [run]


def test_a_refusal_with_nothing_made_is_answered() -> None:
    client = Client(errors=[status_error(503)] * 3)
    with pytest.raises(SubmitRefusedError):
        create_task(client, "alice", "t", DOC, PLAN, ids=DeploymentIds(), landing=no_wait_landing(3))
    assert not client.runs


def test_rules_are_kept_until_the_catalog_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = tmp_path / "catalog.yaml"
    entry = 'a:\n  v1:\n    e:\n      app: {{cmd: ["true"]}}\n      handler: {{image_url: "{}"}}\n'
    catalog.write_text(entry.format("img:1"))
    monkeypatch.setenv("JOBCLOUD_CONFIG", str(catalog))
    rules_module.cached_rules.cache_clear()
    reads: list[int] = []
    real = rules_module.catalog_images
    monkeypatch.setattr(rules_module, "catalog_images", lambda: reads.append(1) or real())
    settings = ApiSettings()
    assert TesRules.cached(settings).images == ["img:1"] and TesRules.cached(settings).images == ["img:1"]
    assert len(reads) == 1
    catalog.write_text(entry.format("img:22"))  # another size and mtime
    os.utime(catalog, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert TesRules.cached(settings).images == ["img:22"] and len(reads) == 2
    assert TesRules.cached(ApiSettings(tes_images="alpine")).images == ["alpine"] and len(reads) == 2
