"""Jobs through the API: bad input is a 4xx naming the field and nothing is created; users see
only their own jobs (404 for another's id) and an admin sees all. A real Prefect server
(the session's `prefect_api`); the runs are made directly, tagged as the API tags them."""

from __future__ import annotations

import json

import pytest

from tests.api_fixtures import api, auth  # noqa: F401 - the fixture

TRAIN = {"entrypoint": "linefit/v1/train", "config_id": "cfg.yaml", "data_ids": ["points.csv"]}


def _post(client, body, user="alice"):
    return client.post("/jobs", json=body, headers=auth(user))


@pytest.fixture
def inputs(api):
    client, _ = api
    client.put("/files/cfg.yaml", content=b"epochs: 1\n", headers=auth("alice"))
    client.put("/files/points.csv", content=b"x,y\n1,2\n", headers=auth("alice"))
    return api


@pytest.mark.parametrize(
    "change, status, field",
    [
        ({"entrypoint": "nope/v1/train"}, 404, "entrypoint"),
        ({"entrypoint": "linefit/v9/train"}, 404, "entrypoint"),
        ({"entrypoint": "not-a-ref"}, 404, "entrypoint"),
        ({"env": {"PATH": "/evil"}}, 400, "env"),
        ({"data_ids": ["../bob/points.csv"]}, 400, "data_ids"),
        ({"config_id": "/etc/passwd"}, 400, "config_id"),
        ({"data_ids": ["absent.csv"]}, 400, "data_ids"),
        ({"data_ids": []}, 400, None),
        ({"callback_url": "http://169.254.169.254/latest/meta-data"}, 400, "callback_url"),
        ({"callback_url": "file:///etc/passwd"}, 400, "callback_url"),
        ({"hardware": {"memory": 2}}, 400, "hardware.memory"),
        ({"hardware": {"cpu": -1}}, 422, "hardware.cpu"),
        ({"timeout": "soon"}, 422, "timeout"),
        ({"surprise": 1}, 422, "surprise"),
        ({"secrets": {"X": "api-keys"}}, 403, "secrets"),
        ({"artifact_ids": ["jobs/00000000-0000-0000-0000-000000000000/artifact"]}, 400, "artifact_ids"),
        ({"priority": 9}, 422, "priority"),
    ],
)
def test_bad_job_requests_are_4xx_naming_the_field(inputs, prefect_api: str, change, status, field) -> None:
    client, store = inputs
    r = _post(client, {**TRAIN, **change})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    if field:
        assert error["field"] == field, error
    assert error["message"] and error["status"] == status
    assert client.get("/jobs", headers=auth("alice")).json() == []  # nothing started


@pytest.mark.parametrize("raw", [b"{", b"[1, 2]", b"null", b"\xff\xfe", b'{"entrypoint": 5}'])
def test_malformed_json_is_422(api, raw: bytes) -> None:
    client, _ = api
    r = client.post("/jobs", content=raw, headers={**auth("alice"), "content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["fix"]


def _run(client_prefect, user: str, extra: list[str] = ()) -> str:
    from prefect import flow

    @flow(name="api-ownership-probe")
    def probe() -> None:
        pass

    run = client_prefect.create_flow_run(probe, tags=["app:linefit", "version:v1", "entrypoint:train", f"user:{user}", *extra])
    return str(run.id)


def test_users_see_only_their_own_jobs(api, prefect_api: str) -> None:
    from tests.prefect_helpers import prefect_client

    client, _ = api
    with prefect_client(prefect_api) as pc:
        mine, theirs = _run(pc, "alice"), _run(pc, "bob")
    listed = {j["id"] for j in client.get("/jobs", headers=auth("alice")).json()}
    assert mine in listed and theirs not in listed
    shown = client.get(f"/jobs/{mine}", headers=auth("alice"))
    assert shown.status_code == 200 and shown.json()["state"] in ("Scheduled", "Pending")
    for path in (f"/jobs/{theirs}", f"/jobs/{theirs}/logs", f"/jobs/{theirs}/files", f"/jobs/{theirs}/files/output/x"):
        r = client.get(path, headers=auth("alice"))
        assert r.status_code == 404 and theirs in r.json()["error"]["message"], (path, r.text)
        assert "bob" not in r.text
    assert client.post(f"/jobs/{theirs}/cancel", headers=auth("alice")).status_code == 404
    assert client.get("/jobs/not-a-uuid", headers=auth("alice")).status_code == 404
    # Bob cannot use alice's job as an input either.
    bad = _post(client, {"entrypoint": "linefit/v1/predict", "data_ids": ["q.csv"], "artifact_ids": [f"jobs/{mine}/artifact"]}, "bob")
    assert bad.status_code == 400
    # The admin sees everyone's, or one user's.
    everyone = {j["id"] for j in client.get("/jobs", headers=auth("root")).json()}
    assert {mine, theirs} <= everyone
    only_bob = {j["id"] for j in client.get("/jobs", params={"owner": "bob"}, headers=auth("root")).json()}
    assert theirs in only_bob and mine not in only_bob
    assert client.get(f"/jobs/{theirs}", headers=auth("root")).status_code == 200
    # Cancelling a queued job of one's own works at once.
    done = client.post(f"/jobs/{mine}/cancel", headers=auth("alice"))
    assert done.status_code == 200 and done.json()["state"] == "Cancelled"
    again = client.post(f"/jobs/{mine}/cancel", headers=auth("alice"))
    assert again.status_code == 409
    assert client.get("/jobs", params={"state": "bogus"}, headers=auth("alice")).status_code == 400


def test_active_jobs_bound(tmp_path, monkeypatch, prefect_api: str) -> None:
    from tests.api_fixtures import make_app
    from tests.conftest import ROOT
    from tests.prefect_helpers import prefect_client

    monkeypatch.setenv("JOBCLOUD_CONFIG", str(ROOT / "application_config.yaml"))
    client, _ = make_app(tmp_path, max_active_jobs=1)
    with client, prefect_client(prefect_api) as pc:
        _run(pc, "dave-bound")
        from tests.api_fixtures import KEYS, TOKENS  # noqa: F401

        client.app.state.keys = __import__("jobcloud.deployments.http_api.auth", fromlist=["KeyRing"]).KeyRing.parse(
            json.dumps({"d" * 20: {"user": "dave-bound"}}), "test"
        )
        h = {"authorization": "Bearer " + "d" * 20}
        client.put("/files/cfg.yaml", content=b"a: 1\n", headers=h)
        client.put("/files/points.csv", content=b"x,y\n", headers=h)
        r = client.post("/jobs", json=TRAIN, headers=h)
        assert r.status_code == 429, r.text
        assert "JOBCLOUD_API_MAX_ACTIVE_JOBS" in r.json()["error"]["fix"]
