"""Presigned URLs of the HTTP API against a real S3 server (SeaweedFS on free ports): ask the
API for an upload URL, PUT the bytes to it with plain HTTP, see the file through the API and the
job store, ask for a download URL and GET it back with plain HTTP. Keys outside the caller's
folder are 403, and a local store says it has no presigned URLs."""

from __future__ import annotations

import hashlib
import os
import urllib.request
import uuid
from pathlib import Path

import httpx
import pytest

from jobcloud.blocks.store.job_store import JobStore
from jobcloud.blocks.store.store_urls import s3_options
from tests.api_fixtures import auth, make_app
from tests.integration.seaweed import ACCESS_KEY, REGION, SECRET_KEY, Seaweed

pytestmark = pytest.mark.integration


@pytest.fixture
def s3_api(seaweed: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("JOBCLOUD_CONFIG", "application_config.yaml")
    bucket = seaweed.make_bucket(f"p-{uuid.uuid4().hex[:12]}")
    opts = s3_options(endpoint_url=seaweed.endpoint, region=REGION, key=ACCESS_KEY, secret=SECRET_KEY)
    store = JobStore(f"s3://{bucket}/root", opts)
    client, _ = make_app(tmp_path, store=store, presign_expiry_s=600)
    with client:
        yield client, store


def test_upload_and_download_through_presigned_urls(s3_api) -> None:
    client, store = s3_api
    data = os.urandom(3 * 1024 * 1024 + 17)
    key = "runs/2026/in put.bin"  # slashes and a space in the key
    r = client.post(f"/files/{key}:upload-url", headers=auth("alice"))
    assert r.status_code == 200, r.text
    up = r.json()
    assert up["method"] == "PUT" and up["expires_in"] == 600 and up["url"].startswith("http")
    assert "X-Amz-Signature" in up["url"] and "jobcloud-test-secret" not in up["url"]
    put = httpx.put(up["url"], content=data, headers=up["headers"])  # plain HTTP, no credentials
    assert put.status_code == 200, put.text

    # The file is an ordinary file of alice's now: listed, downloadable, usable by jobs.
    listed = client.get("/files", params={"prefix": "runs/2026"}, headers=auth("alice")).json()["entries"]
    assert [(e["key"], e["size"]) for e in listed] == [(key, len(data))]
    assert client.get(f"/files/{key}", headers=auth("alice")).content == data
    assert store.read_bytes(f"users/alice/{key}") == data

    r = client.get(f"/files/{key}:download-url", headers=auth("alice"))
    assert r.status_code == 200, r.text
    down = r.json()
    assert down["method"] == "GET" and down["expires_in"] == 600
    with urllib.request.urlopen(urllib.request.Request(down["url"], headers=down["headers"])) as resp:  # noqa: S310 - our URL
        assert hashlib.sha256(resp.read()).hexdigest() == hashlib.sha256(data).hexdigest()
    # The URL is for that one object and method: another key or a PUT with it is refused.
    assert httpx.get(down["url"].replace("in%20put.bin", "other.bin")).status_code == 403
    assert httpx.put(down["url"], content=b"overwrite").status_code == 403
    assert store.read_bytes(f"users/alice/{key}") == data


# Encoded: httpx would resolve a plain '..' in the URL before sending it; the server decodes these.
def test_an_upload_through_the_api_is_spooled_then_stored_and_presigned_back(s3_api, tmp_path: Path) -> None:
    client, store = s3_api
    data = os.urandom(2 * 1024 * 1024 + 3)
    r = client.put("/files/via/api.bin", content=data, headers=auth("alice"))
    assert r.status_code == 201, r.text
    assert r.json() == {"key": "via/api.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert store.read_bytes("users/alice/via/api.bin") == data
    assert list((tmp_path / "spool").iterdir()) == []  # the spool file is gone
    down = client.get("/files/via/api.bin:download-url", headers=auth("alice")).json()
    assert httpx.get(down["url"]).content == data


@pytest.mark.parametrize("key", ["%2e%2e/bob/x.bin", "a/%2e%2e/%2e%2e/bob/x.bin", "..%2fbob/x.bin", "%252e%252e/bob/x.bin"])
def test_keys_outside_the_folder_are_403(s3_api, key: str) -> None:
    client, store = s3_api
    store.write_bytes("users/bob/x.bin", b"bob's")
    for r in (
        client.post(f"/files/{key}:upload-url", headers=auth("alice")),
        client.get(f"/files/{key}:download-url", headers=auth("alice")),
    ):
        assert r.status_code == 403, r.text
        assert r.json()["error"]["field"] == "key" and "outside your folder" in r.json()["error"]["message"]
        assert "url" not in r.json()


def test_another_users_folder_is_403_and_missing_files_404(s3_api) -> None:
    client, store = s3_api
    store.write_bytes("users/bob/x.bin", b"bob's")
    r = client.get("/files/x.bin:download-url", params={"owner": "bob"}, headers=auth("alice"))
    assert r.status_code == 403 and r.json()["error"]["field"] == "owner"
    r = client.post("/files/x.bin:upload-url", params={"owner": "bob"}, headers=auth("alice"))
    assert r.status_code == 403
    admin = client.get("/files/x.bin:download-url", params={"owner": "bob"}, headers=auth("root"))
    assert admin.status_code == 200 and httpx.get(admin.json()["url"]).content == b"bob's"
    assert client.get("/files/absent.bin:download-url", headers=auth("alice")).status_code == 404
    store.write_bytes("users/alice/d/f.txt", b"1")
    assert client.get("/files/d:download-url", headers=auth("alice")).status_code == 400  # a folder
    assert client.post("/files/x.bin:upload-url").status_code == 401


def test_a_local_store_has_no_presigned_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCLOUD_CONFIG", "application_config.yaml")
    client, _ = make_app(tmp_path)
    with client:
        client.put("/files/a/b.txt", content=b"x", headers=auth("alice"))
        for r, instead in (
            (client.post("/files/a/b.txt:upload-url", headers=auth("alice")), "PUT /files/a/b.txt"),
            (client.get("/files/a/b.txt:download-url", headers=auth("alice")), "GET /files/a/b.txt"),
        ):
            assert r.status_code == 409, r.text
            assert "no presigned URLs" in r.json()["error"]["message"] and instead in r.json()["error"]["fix"]
