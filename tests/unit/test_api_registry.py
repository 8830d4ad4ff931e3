"""The registry routes and the Swiss AI registration bodies."""

from __future__ import annotations

from jobcloud.deployments.http_api.register import register, registrations
from jobcloud.flows.catalog import load_catalog
from tests.api_fixtures import api, auth  # noqa: F401 - the fixture
from tests.conftest import ROOT
from tests.receivers import HttpReceiver


def test_applications_versions_entrypoints(api) -> None:
    client, _ = api
    apps = client.get("/applications", headers=auth("bob")).json()
    linefit = next(a for a in apps if a["name"] == "linefit")
    assert linefit["default_version"] == "v1"
    assert {"version": "v1", "entrypoints": ["train", "predict"]} in linefit["versions"]
    assert client.get("/applications/linefit", headers=auth("bob")).json() == linefit
    v1 = client.get("/applications/linefit/versions/v1", headers=auth("bob")).json()
    train = next(e for e in v1["entrypoints"] if e["name"] == "train")
    assert train["inputs"] == {"config_id": "/files/config", "data_ids": "/files/data", "artifact_ids": "/files/artifact"}
    assert train["required_inputs"] == ["config_id", "data_ids"]
    assert train["env"] == ["LINEFIT_EPOCHS"]
    assert train["image"] == "localhost/jobcloud/linefit:1"
    assert train["image_present"] is None  # no engine where DOCKER_HOST points in this test
    assert set(train["parameters"]["properties"]) >= {"config_id", "data_ids", "env", "hardware", "timeout", "callback_url"}
    assert set(train["parameters"]["required"]) == {"config_id", "data_ids"}
    for path, field in [("/applications/nope", "app"), ("/applications/linefit/versions/v9", "version")]:
        r = client.get(path, headers=auth("bob"))
        assert r.status_code == 404 and r.json()["error"]["field"] == field


def test_swiss_status_and_unknown_entrypoint(api) -> None:
    client, _ = api
    assert client.get("/swiss/linefit/v1/train/status").json() == {"status": "available"}
    assert client.get("/swiss/linefit/v1/nope/status").status_code == 404
    r = client.post("/swiss/linefit/v1/train/compute", json={"task_id": "../x", "data_in": []}, headers=auth("alice"))
    assert r.status_code == 422 and r.json()["error"]["field"] == "task_id"


def test_register_posts_one_service_per_entrypoint() -> None:
    catalog = load_catalog(ROOT / "application_config.yaml")
    receiver = HttpReceiver()
    try:
        results = register(f"http://127.0.0.1:{receiver.port}", "http://api.example.org", catalog, token="core-token")
        count = len(list(catalog.entries()))
        assert len(results) == count and all(r["status"] == 204 for r in results)
        got = receiver.wait_for(count)
        assert {r.method for r in got} == {"POST"} and {r.path for r in got} == {"/services"}
        assert got[0].headers["authorization"] == "Bearer core-token"
        bodies = [r.json() for r in got]
        assert bodies == registrations(catalog, "http://api.example.org")
        train = next(b for b in bodies if b["slug"] == "linefit-v1-train")
        assert train["url"] == "http://api.example.org/swiss/linefit/v1/train"
        assert [f["name"] for f in train["data_in_fields"]] == ["config_id", "data_ids", "artifact_ids"]
    finally:
        receiver.stop()
