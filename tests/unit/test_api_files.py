"""Files through the API: streamed upload with size and SHA-256, listing, streamed download,
delete, per-user prefixes, traversal keys, oversized uploads (nothing stored half-way)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.api_fixtures import api, auth, make_app  # noqa: F401 - the fixture


def test_upload_list_download_delete(api) -> None:
    client, store = api
    data = os.urandom(3 * 1024 * 1024 + 7)
    r = client.put("/files/data/exp1/points.bin", content=data, headers=auth("alice"))
    assert r.status_code == 201, r.text
    assert r.json() == {"key": "data/exp1/points.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert store.read_bytes("users/alice/data/exp1/points.bin") == data

    listing = client.get("/files", params={"recursive": True}, headers=auth("alice")).json()
    assert listing["entries"] == [{"key": "data/exp1/points.bin", "size": len(data), "type": "file"}]
    top = client.get("/files", params={"prefix": "data"}, headers=auth("alice")).json()
    assert top["entries"] == [{"key": "data/exp1", "size": 0, "type": "directory"}]

    got = client.get("/files/data/exp1/points.bin", headers=auth("alice"))
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-length"] == str(len(data))

    folder = client.get("/files/data/exp1", headers=auth("alice"))
    assert folder.status_code == 400 and "prefix" in folder.json()["error"]["fix"]
    assert client.delete("/files/data", headers=auth("alice")).status_code == 400
    assert client.delete("/files/data", params={"recursive": True}, headers=auth("alice")).json()["removed"] == 1
    assert client.get("/files/data/exp1/points.bin", headers=auth("alice")).status_code == 404


def test_users_see_only_their_own_files(api) -> None:
    client, _ = api
    client.put("/files/secret.txt", content=b"alice's", headers=auth("alice"))
    assert client.get("/files/secret.txt", headers=auth("bob")).status_code == 404
    assert client.get("/files", headers=auth("bob")).json()["entries"] == []
    assert client.delete("/files/secret.txt", headers=auth("bob")).status_code == 404
    other = client.get("/files/secret.txt", params={"owner": "alice"}, headers=auth("bob"))
    assert other.status_code == 403 and other.json()["error"]["field"] == "owner"
    # An admin may act for any user.
    assert client.get("/files/secret.txt", params={"owner": "alice"}, headers=auth("root")).content == b"alice's"
    assert client.get("/files", params={"owner": "../x"}, headers=auth("root")).status_code == 400


@pytest.mark.parametrize("key", ["../bob/secret.txt", "a/../../x", "%2e%2e/x", "a//b", "a\\b", "a%2fb/..%2f"])
def test_traversal_keys_are_refused(api, key: str) -> None:
    client, store = api
    r = client.put(f"/files/{key}", content=b"x", headers=auth("alice"))
    assert r.status_code in (400, 404), r.text  # the router may already refuse a path it cannot map
    if r.status_code == 400:
        assert r.json()["error"]["field"] == "key"
    assert not store.exists("users/bob")
    assert client.get(f"/files/{key}", headers=auth("alice")).status_code in (400, 404)


def test_oversized_upload_leaves_nothing(tmp_path: Path) -> None:
    client, store = make_app(tmp_path, max_upload_bytes=1000)
    with client:
        r = client.put("/files/big.bin", content=b"x" * 1001, headers=auth("alice"))
        assert r.status_code == 413 and r.json()["error"]["field"] == "body"

        def chunks():
            for _ in range(10):
                yield b"y" * 300

        r = client.put("/files/big.bin", content=chunks(), headers=auth("alice"))
        assert r.status_code == 413
        assert not store.exists("users/alice/big.bin")
        # A local store receives the upload in place: no spool file, and nothing left in the
        # store either (no hidden part file, not even the user's new folder).
        assert not (tmp_path / "spool").exists() or list((tmp_path / "spool").iterdir()) == []
        assert [p.name for p in (tmp_path / "store").rglob("*")] == []
        ok = client.put("/files/small.bin", content=b"z" * 1000, headers=auth("alice"))
        assert ok.status_code == 201


def test_upload_over_an_existing_folder_is_refused(api) -> None:
    client, _ = api
    client.put("/files/d/x", content=b"1", headers=auth("alice"))
    r = client.put("/files/d", content=b"2", headers=auth("alice"))
    assert r.status_code == 400 and "folder" in r.json()["error"]["message"]
    inside = client.put("/files/d/x/y", content=b"3", headers=auth("alice"))  # d/x is a file
    assert inside.status_code == 400 and inside.json()["error"]["field"] == "key" and inside.json()["error"]["fix"]


def test_a_name_outside_ascii_downloads_with_an_encoded_filename(api) -> None:
    client, _ = api
    key = 'data/(╯°□°)╯ "fit".txt'
    assert client.put(f"/files/{key}", content=b"x", headers=auth("alice")).status_code == 201
    got = client.get(f"/files/{key}", headers=auth("alice"))
    assert got.status_code == 200 and got.content == b"x"
    disposition = got.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="(') and "filename*=UTF-8''" in disposition
    assert "%E2%95%AF" in disposition  # ╯ in UTF-8, percent-encoded
