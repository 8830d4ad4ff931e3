"""The API's authentication, key list, rate limit and body limit (FastAPI's TestClient; no mocks
of JobCloud itself)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobcloud.deployments.http_api.app import create_app
from jobcloud.deployments.http_api.auth import ApiKeysError, load_keys
from jobcloud.deployments.http_api.settings import ApiSettings, get_api_settings
from tests.api_fixtures import api, auth, make_app  # noqa: F401 - the fixture

OPEN = ["/status", "/docs", "/openapi.json", "/swiss/linefit/v1/train/status"]
GUARDED = [
    ("get", "/applications"),
    ("get", "/files"),
    ("get", "/jobs"),
    ("put", "/files/a.txt"),
    ("post", "/jobs"),
    ("get", "/jobs/00000000-0000-0000-0000-000000000000"),
]


@pytest.mark.parametrize("path", OPEN)
def test_open_routes_need_no_token(api, path: str) -> None:
    client, _ = api
    assert client.get(path).status_code == 200


@pytest.mark.parametrize("method, path", GUARDED)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token-0123456789", "Basic abc", "Bearer "])
def test_every_other_route_is_401_without_a_known_token(api, method: str, path: str, header: str | None) -> None:
    client, store = api
    headers = {"authorization": header} if header else {}
    response = client.request(method, path, headers=headers, content=b"x")
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["field"] == "Authorization" and "Bearer" in error["fix"]
    assert response.headers["www-authenticate"] == "Bearer"
    assert not store.exists("users")  # nothing stored without a token


def test_keys_from_a_file_and_their_mistakes(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"t" * 20: {"user": "ann"}}))
    ring = load_keys(ApiSettings(keys_file=path))
    assert ring.lookup("t" * 20).user == "ann" and ring.lookup("t" * 20).role == "user"
    assert ring.lookup("t" * 19) is None
    for bad in [
        "[]",
        "{}",
        "not json",
        json.dumps({"short": {"user": "ann"}}),
        json.dumps({"t" * 20: {"user": "../x"}}),
        json.dumps({"t" * 20: {"user": "ann", "role": "god"}}),
    ]:
        path.write_text(bad)
        with pytest.raises(ApiKeysError):
            load_keys(ApiSettings(keys_file=path))
    with pytest.raises(ApiKeysError, match="JOBCLOUD_API_KEYS_BLOCK"):
        load_keys(ApiSettings())
    with pytest.raises(ApiKeysError):
        create_app(ApiSettings(keys_file=tmp_path / "absent.json"))


def test_keys_from_a_secret_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: str) -> None:
    from prefect.blocks.system import Secret

    Secret(value=json.dumps({"s" * 20: {"user": "carol", "role": "admin"}})).save("api-keys-test", overwrite=True)
    monkeypatch.setenv("JOBCLOUD_API_KEYS_BLOCK", "api-keys-test")
    ring = load_keys(get_api_settings())
    who = ring.lookup("s" * 20)
    assert who is not None and who.user == "carol" and who.is_admin


def test_rate_limit_per_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCLOUD_CONFIG", "application_config.yaml")
    client, _ = make_app(tmp_path, rate_per_minute=3)
    with client:
        codes = [client.get("/files", headers=auth("alice")).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = client.get("/files", headers=auth("alice"))
        assert int(limited.headers["retry-after"]) >= 1 and "retry after" in limited.json()["error"]["fix"]
        assert client.get("/files", headers=auth("bob")).status_code == 200  # another user is not limited


def test_body_limit_with_length_and_chunked(tmp_path: Path) -> None:
    client, _ = make_app(tmp_path, max_body_bytes=1000)
    big = json.dumps({"entrypoint": "linefit/v1/train", "env": {"X": "y" * 2000}})
    with client:
        r = client.post("/jobs", content=big, headers={**auth("alice"), "content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["field"] == "body"

        def chunks():
            for _ in range(5):
                yield b"x" * 400

        r = client.post("/jobs", content=chunks(), headers={**auth("alice"), "content-type": "application/json"})
        assert r.status_code == 413, r.text
