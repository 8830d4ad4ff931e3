"""TES v1.1 through the API (FastAPI's TestClient) on the session's real Prefect server, with
the `tes-task/tes-v1-task` deployment registered but no worker: tasks stay queued unless a
test moves their state. Every answer is validated against the official v1.1 schema
(tests/tes_schema.py), and bad input is a 400 naming the field with nothing created."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from jobcloud.deployments.http_api.tes.translate import store_base
from jobcloud.flows.tes_plan import EXECUTOR_ERROR_STATE, TES_DEPLOYMENTS, TES_FLOW_NAME, TesRunLog, run_log_key
from tests.api_fixtures import api, auth  # noqa: F401 - the fixture
from tests.prefect_helpers import prefect_client
from tests.tes_schema import PREFIX, spec_path, validate_answer, validate_task


class Tes:
    """A TES client over the TestClient that checks every 200 answer against the spec."""

    def __init__(self, client: TestClient, user: str = "alice") -> None:
        self.client, self.user = client, user

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {**auth(self.user), **kwargs.pop("headers", {})}
        r = self.client.request(method, PREFIX + path, headers=headers, **kwargs)
        if r.status_code == 200:
            validate_answer(spec_path(PREFIX + path), method, r.json())
        return r

    def create(self, task: dict[str, Any]) -> str:
        validate_task(task)
        r = self.call("POST", "/tasks", json=task)
        assert r.status_code == 200, r.text
        return r.json()["id"]


@pytest.fixture(scope="module")
def tes_deployment(prefect_api: str) -> None:
    """The TES deployments as `jobcloud deploy` names them, without pools (no worker runs them)."""
    from prefect import flow

    @flow(name=TES_FLOW_NAME)
    def tes_task(task: dict, plan: dict) -> None:  # noqa: ARG001 - the parameters' shape
        pass

    with prefect_client(prefect_api) as pc:
        flow_id = pc.create_flow(tes_task)
        for name in TES_DEPLOYMENTS.values():
            pc.create_deployment(flow_id=flow_id, name=name, entrypoint="jobcloud.flows.tes_task.tes_task")


@pytest.fixture
def tes(api, tes_deployment) -> tuple[Tes, Any]:
    client, store = api
    store.write_bytes("users/alice/in.txt", b"hello\n")
    # The tasks here name `alpine`: any image (the image allow-list: test_tes_rules.py).
    client.app.state.settings = client.app.state.settings.model_copy(update={"tes_images": "*"})
    return Tes(client), store


def _task(store: Any, **extra: Any) -> dict[str, Any]:
    return {
        "name": "md5-" + uuid.uuid4().hex[:8],
        "executors": [{"image": "alpine", "command": ["md5sum", "/data/in.txt"], "stdout": "/out/md5.txt"}],
        "inputs": [{"url": f"{store_base(store)}/users/alice/in.txt", "path": "/data/in.txt"}],
        "outputs": [{"url": f"{store_base(store)}/users/alice/md5.txt", "path": "/out/md5.txt"}],
        **extra,
    }


def test_service_info_names_the_store(tes) -> None:
    t, store = tes
    info = t.call("GET", "/service-info").json()
    assert info["type"] == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert info["storage"] == [store_base(store)]
    assert "gpu" in info["tesResources_backend_parameters"]


def test_no_token_no_tes(tes) -> None:
    t, _ = tes
    r = t.client.get(PREFIX + "/tasks")
    assert r.status_code == 401


def test_create_then_get_in_each_view(tes) -> None:
    t, store = tes
    task = _task(store, tags={"WORKFLOW_ID": "cwl-1"}, resources={"cpu_cores": 1, "ram_gb": 0.5})
    task["inputs"].append({"content": "x" * (128 * 1024), "path": "/data/big.txt"})  # TES: at least 128 KiB inline
    task_id = t.create(task)
    minimal = t.call("GET", f"/tasks/{task_id}").json()
    assert minimal == {"id": task_id, "state": "QUEUED"}
    basic = t.call("GET", f"/tasks/{task_id}", params={"view": "BASIC"}).json()
    assert basic["name"] == task["name"] and basic["tags"] == {"WORKFLOW_ID": "cwl-1"} and basic["creation_time"]
    assert "content" not in basic["inputs"][1] and "logs" not in basic
    full = t.call("GET", f"/tasks/{task_id}", params={"view": "FULL"}).json()
    assert full["inputs"][1]["content"] == "x" * (128 * 1024)
    assert full["resources"] == {"cpu_cores": 1, "ram_gb": 0.5}
    # The flow run is named after the task and carries its plan.
    with prefect_client() as pc:
        run = pc.read_flow_run(uuid.UUID(task_id))
    assert run.name == task["name"] and "user:alice" in run.tags and "tes-tag:WORKFLOW_ID=cwl-1" in run.tags
    assert run.parameters["plan"]["inputs"][0]["key"] == "users/alice/in.txt"
    assert run.parameters["plan"]["cpu"] == 1.0 and run.parameters["plan"]["memory_mb"] == 512


@pytest.mark.parametrize(
    "change, status, field",
    [
        ({"executors": []}, 400, "executors"),
        ({"executors": None}, 400, "executors"),
        ({"executors": [{"command": ["true"]}]}, 400, "executors[0].image"),
        ({"executors": [{"image": "alpine"}]}, 400, "executors[0].command"),
        ({"inputs": [{"path": "/data/a"}]}, 400, "inputs[0].url"),
        ({"inputs": [{"url": "x", "path": "data/a"}]}, 400, "inputs[0].path"),
        ({"surprise": 1}, 400, "surprise"),
        ({"inputs": [{"url": "{base}/users/bob/x", "path": "/data/a"}]}, 403, "inputs[0].url"),
        (
            {"resources": {"backend_parameters": {"VmSize": "x"}, "backend_parameters_strict": True}},
            400,
            "resources.backend_parameters.VmSize",
        ),
    ],
)
def test_bad_tasks_are_refused_naming_the_field(tes, change, status, field) -> None:
    t, store = tes
    task = {k: v for k, v in {**_task(store), **change}.items() if v is not None}
    text = json.dumps(task).replace("{base}", store_base(store))
    r = t.call("POST", "/tasks", content=text, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field
    listed = t.call("GET", "/tasks", params={"name_prefix": task["name"]}).json()
    assert listed["tasks"] == []  # nothing created


@pytest.mark.parametrize("raw", [b"{", b"[1]", b"null"])
def test_malformed_json_is_400(tes, raw: bytes) -> None:
    t, _ = tes
    r = t.client.post(PREFIX + "/tasks", content=raw, headers={**auth("alice"), "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "body", r.text


@pytest.mark.parametrize(
    "params, field",
    [({"view": "HUGE"}, "view"), ({"state": "DONE"}, "state"), ({"page_size": 0}, "page_size"), ({"page_token": "nope"}, "page_token")],
)
def test_bad_list_parameters_are_400(tes, params, field) -> None:
    t, _ = tes
    r = t.call("GET", "/tasks", params=params)
    assert r.status_code == 400 and r.json()["error"]["field"] == field, r.text


def test_list_filters_and_pages(tes) -> None:
    t, store = tes
    prefix = "page-" + uuid.uuid4().hex[:8]
    ids = [t.create(_task(store, name=f"{prefix}-{i}", tags={"batch": prefix, "i": str(i % 2)})) for i in range(5)]
    t.create(_task(store, name="other-" + prefix))
    seen: list[str] = []
    token = None
    while True:
        params = {"name_prefix": prefix, "page_size": 2, **({"page_token": token} if token else {})}
        page = t.call("GET", "/tasks", params=params).json()
        seen += [x["id"] for x in page["tasks"]]
        assert all(set(x) == {"id", "state"} for x in page["tasks"])  # MINIMAL by default
        token = page.get("next_page_token")
        if not token:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    by_tag = t.call("GET", "/tasks", params={"tag_key": ["batch", "i"], "tag_value": [prefix, "1"], "view": "BASIC"}).json()
    assert sorted(x["id"] for x in by_tag["tasks"]) == sorted(ids[1::2])
    any_value = t.call("GET", "/tasks", params={"tag_key": "batch"}).json()
    assert set(ids) <= {x["id"] for x in any_value["tasks"]}
    queued = t.call("GET", "/tasks", params={"name_prefix": prefix, "state": "QUEUED"}).json()
    assert len(queued["tasks"]) == 5
    assert t.call("GET", "/tasks", params={"name_prefix": prefix, "state": "COMPLETE"}).json()["tasks"] == []


def test_a_task_created_while_paging_never_repeats_one(tes) -> None:
    """Page tokens mark runs, not positions: a task created between two pages is on neither
    later page, and no task of the first page comes back."""
    t, store = tes
    prefix = "mid-" + uuid.uuid4().hex[:8]
    ids = [t.create(_task(store, name=f"{prefix}-{i}")) for i in range(4)]
    first = t.call("GET", "/tasks", params={"name_prefix": prefix, "page_size": 2}).json()
    newer = t.create(_task(store, name=f"{prefix}-new"))
    rest = t.call("GET", "/tasks", params={"name_prefix": prefix, "page_size": 10, "page_token": first["next_page_token"]}).json()
    got = [x["id"] for x in first["tasks"]] + [x["id"] for x in rest["tasks"]]
    assert sorted(got) == sorted(ids) and len(got) == 4 and newer not in got
    assert "next_page_token" not in rest
    assert [x["id"] for x in t.call("GET", "/tasks", params={"name_prefix": prefix, "page_size": 1}).json()["tasks"]] == [newer]


def test_users_see_only_their_own_tasks(tes) -> None:
    t, store = tes
    mine = t.create(_task(store))
    bob = Tes(t.client, "bob")
    for method, path in (("GET", f"/tasks/{mine}"), ("POST", f"/tasks/{mine}:cancel")):
        r = bob.call(method, path)
        assert r.status_code == 404 and "alice" not in r.text
    assert mine not in {x["id"] for x in bob.call("GET", "/tasks").json()["tasks"]}
    assert t.call("GET", "/tasks/not-a-uuid").status_code == 404
    assert Tes(t.client, "root").call("GET", f"/tasks/{mine}").status_code == 200  # an admin sees all


def test_a_job_that_is_no_task_is_404(tes, prefect_api: str) -> None:
    from prefect import flow

    @flow(name="api-ownership-probe")
    def probe() -> None:
        pass

    t, _ = tes
    with prefect_client(prefect_api) as pc:
        job = pc.create_flow_run(probe, tags=["app:linefit", "user:alice"])
    assert t.call("GET", f"/tasks/{job.id}").status_code == 404


def test_cancel_a_queued_task(tes) -> None:
    t, store = tes
    task_id = t.create(_task(store))
    assert t.call("POST", f"/tasks/{task_id}:cancel").json() == {}
    assert t.call("GET", f"/tasks/{task_id}").json()["state"] == "CANCELED"
    assert t.call("POST", f"/tasks/{task_id}:cancel").status_code == 200  # again: nothing to do


def test_an_ended_task_answers_its_logs(tes) -> None:
    """The flow's run log (jobs/<id>/tes.json) and its final state, as the flow leaves them."""
    from prefect.states import Failed

    t, store = tes
    task_id = t.create(_task(store))
    log = TesRunLog(
        outcome="EXECUTOR_ERROR",
        start_time="2026-12-01T10:00:00+00:00",
        end_time="2026-12-01T10:00:05+00:00",
        executors=[{"start_time": "2026-12-01T10:00:01+00:00", "end_time": "2026-12-01T10:00:04+00:00", "exit_code": 3, "stdout": "boom"}],
        outputs=[{"url": f"{store_base(store)}/users/alice/md5.txt", "path": "/out/md5.txt", "size_bytes": "33"}],
        system_logs=["executor 0 exited with code 3"],
    )
    store.write_bytes(run_log_key(task_id), log.model_dump_json().encode())
    with prefect_client() as pc:
        pc.set_flow_run_state(uuid.UUID(task_id), Failed(name=EXECUTOR_ERROR_STATE, message="executor 0 exited with code 3"), force=True)
    full = t.call("GET", f"/tasks/{task_id}", params={"view": "FULL"}).json()
    assert full["state"] == "EXECUTOR_ERROR"
    entry = full["logs"][0]
    assert entry["logs"][0]["exit_code"] == 3 and entry["logs"][0]["stdout"] == "boom"
    assert entry["outputs"][0]["size_bytes"] == "33" and entry["system_logs"] == ["executor 0 exited with code 3"]
    basic = t.call("GET", f"/tasks/{task_id}", params={"view": "BASIC"}).json()
    assert "stdout" not in basic["logs"][0]["logs"][0] and "system_logs" not in basic["logs"][0]
    assert t.call("GET", "/tasks", params={"state": "EXECUTOR_ERROR", "name_prefix": full["name"]}).json()["tasks"][0]["id"] == task_id


def test_an_image_off_the_allow_list_is_a_400_naming_it(tes) -> None:
    """By default only the catalog's images run: `alpine` is refused, nothing is created."""
    t, store = tes
    t.client.app.state.settings = t.client.app.state.settings.model_copy(update={"tes_images": None})
    name = "refused-" + uuid.uuid4().hex[:8]
    r = t.call("POST", "/tasks", json={**_task(store), "name": name})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["field"] == "executors[0].image" and "'alpine'" in error["message"] and "JOBCLOUD_API_TES_IMAGES" in error["message"]
    assert t.call("GET", "/tasks", params={"name_prefix": name}).json() == {"tasks": []}
    ok = _task(store, executors=[{"image": "localhost/jobcloud/linefit:1", "command": ["true"]}])
    assert t.call("POST", "/tasks", json=ok).status_code == 200


def test_a_url_off_the_allow_list_still_makes_a_task(tes, prefect_api: str) -> None:
    """Not a refusal (TES): the task is created, and its plan says why its flow will end SYSTEM_ERROR."""
    t, store = tes
    t.client.app.state.settings = t.client.app.state.settings.model_copy(update={"tes_input_urls": "https://data.example.org/*"})
    inputs = [
        {"url": "https://elsewhere.example.com/x.csv", "path": "/data/x.csv"},
        {"url": "https://data.example.org/y.csv", "path": "/data/y.csv"},
    ]
    task_id = t.create(_task(store, inputs=inputs))
    with prefect_client(prefect_api) as pc:
        plan = pc.read_flow_run(uuid.UUID(task_id)).parameters["plan"]
    off, on = plan["inputs"]
    assert off["foreign_url"] == inputs[0]["url"] and "JOBCLOUD_API_TES_INPUT_URLS" in off["why"]
    assert on["url"] == inputs[1]["url"] and plan["url_policy"]["patterns"] == ["https://data.example.org/*"]
