"""The job store on the local disk: verified copies, links never followed, bad names refused."""

from __future__ import annotations

import hashlib
import os
import unicodedata
from pathlib import Path

import pytest

from blocks import transfer
from blocks.job_store import JobStore, local_files
from flows.errors import MissingKeyError, UnsafeKeyError, UserError

MiB = 1024 * 1024


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(str(tmp_path / "store"))


def test_small_and_large_files_round_trip_with_checksums(store: JobStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    small, large = b"x,y\n1,2\n", os.urandom(20 * MiB + 7)  # large: kernel copy + hashing thread
    (src / "a.csv").write_bytes(small)
    (src / "sub" / "big.bin").write_bytes(large)
    (src / "empty").write_bytes(b"")
    seen: list[int] = []
    up = store.upload_tree(src, "data", progress=seen.append)
    assert {r.key: (r.size, r.sha256) for r in up} == {
        "data/a.csv": (len(small), _sha(small)),
        "data/sub/big.bin": (len(large), _sha(large)),
        "data/empty": (0, _sha(b"")),
    }
    assert sum(seen) == len(small) + len(large)
    down = store.download("data", tmp_path / "dst")
    assert {(r.key, r.sha256) for r in down} == {(r.key, r.sha256) for r in up}
    assert (tmp_path / "dst" / "data" / "sub" / "big.bin").read_bytes() == large
    assert not [p for p in (tmp_path / "store").rglob("*") if ".part-" in p.name]


def test_staging_again_trusts_the_recorded_checksum_only_while_the_file_is_unchanged(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "big.bin"
    f.write_bytes(os.urandom(9 * MiB))
    rec = store.upload_tree(f, "in")[0]
    stored = Path(store.path(rec.key))
    if transfer.read_hash_xattr(stored) is None:
        pytest.skip("this filesystem keeps no user xattrs")
    assert transfer.read_hash_xattr(stored) == rec.sha256
    # Rewrite the stored file behind JobCloud's back: the recorded hash no longer applies.
    data = os.urandom(9 * MiB)
    stored.write_bytes(data)
    assert transfer.read_hash_xattr(stored) is None
    assert store.download("in/big.bin", tmp_path / "d1")[0].sha256 == _sha(data)
    # rehash=True never trusts the attribute.
    os.setxattr(stored, transfer.HASH_XATTR, f"{len(data)}:{stored.stat().st_mtime_ns}:{'0' * 64}".encode())
    again = JobStore(store.url, rehash=True).download("in/big.bin", tmp_path / "d2")[0]
    assert again.sha256 == _sha(data)


def test_symlinks_in_outputs_are_never_followed(store: JobStore, tmp_path: Path) -> None:
    out = tmp_path / "output"
    (out / "real").mkdir(parents=True)
    (out / "real" / "result.txt").write_text("42\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("do not upload\n")
    (out / "leak.txt").symlink_to(secret)
    (out / "leakdir").symlink_to(tmp_path)
    (out / "real" / "abs").symlink_to("/etc/passwd")
    os.mkfifo(out / "pipe")
    skipped: list[str] = []
    recs = store.upload_tree(out, "jobs/1/output", skipped=skipped)
    assert [r.key for r in recs] == ["jobs/1/output/real/result.txt"]
    assert sorted(skipped) == ["leak.txt", "leakdir", "pipe", "real/abs"]
    assert not any("do not upload" in p.read_text() for p in Path(store.root).rglob("*") if p.is_file())
    # A link given as the folder itself is not followed either.
    assert local_files(out / "leakdir", skipped) == []


def test_links_inside_the_store_are_not_served(store: JobStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the store\n")
    (Path(store.root) / "data").mkdir()
    (Path(store.root) / "data" / "ok.txt").write_text("ok\n")
    (Path(store.root) / "data" / "evil").symlink_to(secret)
    assert [k for k, _ in store.files("data")] == ["data/ok.txt"]
    assert not store.exists("data/evil")
    with pytest.raises(MissingKeyError):
        store.require("data/evil")


def test_names_differing_only_in_unicode_normalization_are_refused(store: JobStore, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / unicodedata.normalize("NFC", "café.txt")).write_text("composed\n")
    (out / unicodedata.normalize("NFD", "café.txt")).write_text("decomposed\n")
    with pytest.raises(UserError, match="differ only in Unicode normalization"):
        store.upload_tree(out, "jobs/1/output")
    assert not store.exists("jobs/1/output")


def test_bad_keys_never_reach_the_disk(store: JobStore, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    for bad in ("../escape", "/abs", "a/%2e%2e/b", "a\x00b", "n" * 256):
        with pytest.raises(UnsafeKeyError):
            store.upload_tree(tmp_path / "f", bad)
        with pytest.raises(UnsafeKeyError):
            store.download(bad, tmp_path / "d")
    assert not (tmp_path / "escape").exists()


def test_a_long_local_name_is_refused_as_a_key(store: JobStore, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # 200 characters of 2 bytes each: a legal local name on most filesystems? No: 400 bytes is
    # over ext4's 255 too, so build the long key through a folder name at the limit instead.
    (out / ("d" * 200)).mkdir()
    (out / ("d" * 200) / ("é" * 60 + ".txt")).write_text("x")  # 124 bytes: fine
    recs = store.upload_tree(out, "p")
    assert len(recs) == 1
    with pytest.raises(UnsafeKeyError, match="longer than 255 bytes"):
        store.write_bytes("p/" + "é" * 128, b"x")


def test_missing_keys_say_so(store: JobStore, tmp_path: Path) -> None:
    with pytest.raises(MissingKeyError, match="no such key 'nope'"):
        store.download("nope", tmp_path)
    with pytest.raises(MissingKeyError):
        store.read_bytes("nope")
