"""Downloads check the SHA-256 an object carries, not just its size: an object rewritten
behind the store's back (same size, the old checksum kept) is refused, on S3 and GCS alike.

S3 runs against moto's server (a real HTTP endpoint on a free port, which s3fs/aiobotocore
and boto3 both talk to; no container engine). GCS against an in-memory fsspec filesystem
that keeps custom metadata the way gcsfs does.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from moto.server import ThreadedMotoServer

from jobcloud.blocks.store.job_store import JobStore
from jobcloud.blocks.store.store_urls import s3_options
from jobcloud.blocks.transfer.base import SMALL, TransferError, no_progress
from jobcloud.blocks.transfer.generic import FsspecTransfer
from tests.receivers import free_port

KEY = "data/model.bin"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[JobStore, Any, str]:
    """A job store on a fresh bucket of the moto server, a boto3 client beside it, the bucket."""
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    bucket = f"c-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    store = JobStore(f"s3://{bucket}", s3_options(endpoint_url=moto_url, region="us-east-1", key="testing", secret="testing"))
    return store, client, bucket


def _flip(data: bytes) -> bytes:
    """Other bytes of the same size."""
    return bytes([data[0] ^ 0xFF]) + data[1:]


@pytest.mark.parametrize(
    "size",
    [1000, SMALL + 1024],  # one streamed GET (metadata from the GET) / ranged GETs (from a HEAD)
    ids=["one-get", "ranged-gets"],
)
def test_s3_refuses_an_object_changed_behind_its_back(s3: tuple[JobStore, Any, str], tmp_path: Path, size: int) -> None:
    store, client, bucket = s3
    data = os.urandom(size)
    (tmp_path / "model.bin").write_bytes(data)
    rec = store.upload_file(tmp_path / "model.bin", KEY)
    assert rec.sha256 == hashlib.sha256(data).hexdigest()
    # Untouched, it comes back whole: what fails below fails because of the change alone.
    assert store.download(KEY, tmp_path / "ok")[0].sha256 == rec.sha256
    # Rewritten with as many bytes, the recorded checksum forged back: the size check passes.
    client.put_object(Bucket=bucket, Key=KEY, Body=_flip(data), Metadata={"sha256": rec.sha256})
    with pytest.raises(TransferError, match="SHA-256"):
        store.download(KEY, tmp_path / "bad")
    assert not (tmp_path / "bad" / "model.bin").exists()
    assert not list((tmp_path / "bad").glob(".*part-*"))


def test_s3_refuses_a_changed_object_whose_checksum_is_a_tag(s3: tuple[JobStore, Any, str], tmp_path: Path) -> None:
    """Multipart objects carry their SHA-256 as a tag (their metadata is fixed before the parts)."""
    store, client, bucket = s3
    data = os.urandom(SMALL + 1024)
    sha = hashlib.sha256(data).hexdigest()
    client.put_object(Bucket=bucket, Key=KEY, Body=_flip(data), Tagging=f"sha256={sha}")
    with pytest.raises(TransferError, match="SHA-256"):
        store.download(KEY, tmp_path / "bad")


class MetadataMemoryFileSystem(MemoryFileSystem):
    """An in-memory filesystem that keeps custom metadata like gcsfs: ``setxattrs`` sets it,
    ``info`` (and so an open file's ``details``) returns it under ``metadata``."""

    protocol = "gcsmem"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.meta: dict[str, dict[str, str]] = {}

    def setxattrs(self, path: str, **kwargs: str) -> None:
        self.meta.setdefault(self._strip_protocol(path), {}).update(kwargs)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        out = super().info(path, **kwargs)
        return {**out, "metadata": self.meta.get(self._strip_protocol(path), {})}


def test_gcs_downloads_check_the_sha256_recorded_at_upload(tmp_path: Path) -> None:
    fs = MetadataMemoryFileSystem(skip_instance_cache=True)
    t = FsspecTransfer(fs)
    data = os.urandom(5000)
    (tmp_path / "model.bin").write_bytes(data)
    size, sha = t.upload(tmp_path / "model.bin", "/bucket/model.bin", no_progress)
    assert (size, sha) == (len(data), hashlib.sha256(data).hexdigest())
    assert fs.meta["/bucket/model.bin"] == {"sha256": sha}  # recorded on the object
    assert t.download("/bucket/model.bin", tmp_path / "ok.bin", no_progress) == (size, sha)
    fs.pipe_file("/bucket/model.bin", _flip(data))  # same size; the metadata still says `sha`
    with pytest.raises(TransferError, match="SHA-256"):
        t.download("/bucket/model.bin", tmp_path / "bad.bin", no_progress)
    assert not (tmp_path / "bad.bin").exists()
