"""The job store against a real S3 server (SeaweedFS on free ports): round trips, checksums,
clear errors, and a server that dies in the middle of an upload."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from jobcloud.blocks.errors import MissingKeyError, StorageError, UserError
from jobcloud.blocks.store.factory import store_from_setting
from jobcloud.blocks.store.job_store import JobStore
from jobcloud.blocks.store.store_block import JobStoreBlock
from jobcloud.blocks.store.store_urls import s3_options
from jobcloud.blocks.transfer import base as transfer
from jobcloud.blocks.transfer import s3 as transfer_s3
from jobcloud.blocks.transfer.base import StoreAccessError, TransferError
from tests.integration.seaweed import ACCESS_KEY, SECRET_KEY, Seaweed

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@pytest.fixture
def bucket(seaweed: Seaweed, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket, and the standard AWS_* variables pointing at the server."""
    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    return seaweed.make_bucket(f"t-{uuid.uuid4().hex[:12]}")


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "small.txt").write_text("hello\n")
    (root / "empty.bin").write_bytes(b"")
    (root / "sub" / "big.bin").write_bytes(os.urandom(65 * MiB + 123))  # multipart (> 64 MiB)
    (root / "sub" / "deeper" / "x.csv").write_text("x,y\n1,2\n")
    (root / "sub" / "leak").symlink_to("/etc/passwd")
    return root


def test_round_trip_is_verified(bucket: str, seaweed: Seaweed, tmp_path: Path) -> None:
    store = store_from_setting(f"s3://{bucket}/prefix")
    src = _tree(tmp_path / "src")
    skipped: list[str] = []
    up = store.upload_tree(src, "data/exp1", skipped=skipped)
    assert skipped == ["sub/leak"]
    assert sorted(r.key for r in up) == [
        "data/exp1/empty.bin", "data/exp1/small.txt", "data/exp1/sub/big.bin", "data/exp1/sub/deeper/x.csv",
    ]  # fmt: skip
    for r in up:
        local = src / r.key.removeprefix("data/exp1/")
        assert (r.size, r.sha256) == (local.stat().st_size, _sha(local))
    # Every object carries its SHA-256: metadata (one PUT) or a tag (multipart).
    c = seaweed.client()
    assert c.head_object(Bucket=bucket, Key="prefix/data/exp1/small.txt")["Metadata"]["sha256"] == _sha(src / "small.txt")
    tags = c.get_object_tagging(Bucket=bucket, Key="prefix/data/exp1/sub/big.bin")["TagSet"]
    assert {"Key": "sha256", "Value": _sha(src / "sub" / "big.bin")} in tags

    down = store.download("data/exp1", tmp_path / "dst")
    assert {(r.key, r.size, r.sha256) for r in down} == {(r.key, r.size, r.sha256) for r in up}
    for r in up:
        rel = r.key.removeprefix("data/")
        assert (tmp_path / "dst" / rel).read_bytes() == (src / r.key.removeprefix("data/exp1/")).read_bytes()
    assert not (tmp_path / "dst" / "exp1" / "sub" / "leak").exists()
    assert not list((tmp_path / "dst").rglob(".*part-*"))


def test_a_changed_object_is_refused_on_download(bucket: str, seaweed: Seaweed, tmp_path: Path) -> None:
    store = store_from_setting(f"s3://{bucket}")
    f = tmp_path / "model.txt"
    f.write_text("slope 2\n")
    rec = store.upload_tree(f, "m")[0]
    # Someone rewrites the bytes but leaves the recorded checksum: the download must notice.
    seaweed.client().put_object(Bucket=bucket, Key="m/model.txt", Body=b"slope 3\n", Metadata={"sha256": rec.sha256})
    with pytest.raises(TransferError, match="SHA-256"):
        store.download("m/model.txt", tmp_path / "out")
    assert not (tmp_path / "out" / "model.txt").exists()


def test_write_bytes_and_read_back(bucket: str) -> None:
    store = store_from_setting(f"s3://{bucket}/p")
    rec = store.write_bytes("jobs/1/manifest.json", b'{"a": 1}')
    assert rec.sha256 == hashlib.sha256(b'{"a": 1}').hexdigest()
    assert store.read_bytes("jobs/1/manifest.json") == b'{"a": 1}'
    assert [e.key for e in store.list("jobs/1")] == ["jobs/1/manifest.json"]


def test_clear_errors(bucket: str, seaweed: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = store_from_setting(f"s3://{bucket}/p")
    with pytest.raises(MissingKeyError, match="no such key 'nothing/here'"):
        store.require("nothing/here")
    with pytest.raises(MissingKeyError):
        store.download("nothing/here", tmp_path)

    with pytest.raises(StoreAccessError, match="bucket 'no-such-bucket' does not exist"):
        store_from_setting("s3://no-such-bucket/p").require("x")

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    bad = store_from_setting(f"s3://{bucket}/p")
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreAccessError, match="refused the credentials"):
        bad.upload_tree(tmp_path / "f", "in")
    with pytest.raises(StoreAccessError):
        bad.require("in")
    # A StoreAccessError is a UserError: the CLI prints it and exits 2.
    assert issubclass(StoreAccessError, UserError) and issubclass(StoreAccessError, StorageError)


def test_block_settings_reach_the_store(bucket: str, seaweed: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A block's endpoint and SecretStr credentials win over (here: absent) AWS_* variables."""
    for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k)
    block = JobStoreBlock(
        url=f"s3://{bucket}/viablock", endpoint_url=seaweed.endpoint,
        access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY, region="us-east-1",
    )  # fmt: skip
    assert SECRET_KEY not in repr(block)
    store = block.job_store()
    (tmp_path / "a.txt").write_text("via block\n")
    store.upload_tree(tmp_path / "a.txt", "in")
    assert store.read_bytes("in/a.txt") == b"via block\n"


def test_server_killed_mid_upload_never_leaves_a_short_file(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL the server while a 96 MiB file is being uploaded, bring it back 2 s later:
    the upload completes after retries and the object is whole, or it fails with a clear
    StorageError and no object (or a whole one) is there. Never a silently short file."""
    server = Seaweed(tmp_path_factory.mktemp("seaweed-crash")).start()
    try:
        for k, v in server.env().items():
            monkeypatch.setenv(k, v)
        bucket = server.make_bucket("crash")
        big = tmp_path / "big.bin"
        with open(big, "wb") as fh:
            for _ in range(96):
                fh.write(os.urandom(MiB))
        store = store_from_setting(f"s3://{bucket}")
        sent = [0]
        killed = threading.Event()
        restart = threading.Thread(target=lambda: (time.sleep(2.0), server.start()))

        def progress(n: int) -> None:
            sent[0] += n
            if sent[0] > 16 * MiB and not killed.is_set():
                killed.set()
                server.stop(hard=True)
                restart.start()

        outcome: list[object] = []
        t0 = time.monotonic()
        try:
            outcome.append(store.upload_tree(big, "out", progress=progress)[0])
        except StorageError as exc:
            outcome.append(exc)
        assert killed.is_set(), "the server was never stopped: the test did not test anything"
        restart.join(timeout=120)
        c = server.client()
        result = outcome[0]
        print("outcome after the crash:", repr(result)[:300], f"{time.monotonic() - t0:.1f}s")
        if isinstance(result, StorageError):
            assert "big.bin" in str(result) or "s3://" in str(result)
            try:
                head = c.head_object(Bucket=bucket, Key="out/big.bin")
            except c.exceptions.ClientError:
                return  # failed clearly, nothing published
            assert head["ContentLength"] == big.stat().st_size
        else:
            assert result.size == big.stat().st_size and result.sha256 == _sha(big)
        got = store_from_setting(f"s3://{bucket}").download("out/big.bin", tmp_path / "back")
        assert got[0].sha256 == _sha(big)
        assert time.monotonic() - t0 < 300
    finally:
        server.stop()


def test_unreachable_server_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.integration.seaweed import free_port

    monkeypatch.setattr(transfer, "ATTEMPTS", 2)
    monkeypatch.setattr(transfer_s3.S3Transfer, "request_attempts", 2)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    (tmp_path / "f.txt").write_text("x")
    store = JobStore("s3://some-bucket/p", s3_options())
    with pytest.raises(TransferError, match="f.txt|cannot be reached|Could not connect"):
        store.upload_tree(tmp_path / "f.txt", "in")
