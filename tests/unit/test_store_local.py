"""The job store on the local disk: verified copies, links never followed, bad names refused."""

from __future__ import annotations

import hashlib
import os
import unicodedata
from pathlib import Path

import pytest

from jobcloud.blocks.errors import MissingKeyError, UnsafeKeyError, UserError
from jobcloud.blocks.store.job_store import JobStore, local_files
from jobcloud.blocks.transfer import local as transfer

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
    # While the file is unchanged, staging it again takes the recorded checksum, without
    # hashing: a record that fits the file's size and mtime is what comes back.
    st = stored.stat()
    os.setxattr(stored, transfer.HASH_XATTR, f"{st.st_size}:{st.st_mtime_ns}:{'f' * 64}".encode())
    assert stored.stat().st_mtime_ns == st.st_mtime_ns
    assert store.download("in/big.bin", tmp_path / "d0")[0].sha256 == "f" * 64
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


def test_long_names_upload_and_a_key_segment_over_255_bytes_is_refused(store: JobStore, tmp_path: Path) -> None:
    # A local name cannot pass 255 bytes (the filesystem's limit), so a too-long segment can only
    # come from a key: checked on the key; long local names (counted in bytes) still upload.
    out = tmp_path / "out"
    out.mkdir()
    (out / ("d" * 200)).mkdir()
    (out / ("d" * 200) / ("é" * 60 + ".txt")).write_text("x")  # 124 bytes
    recs = store.upload_tree(out, "p")
    assert [r.key for r in recs] == ["p/" + "d" * 200 + "/" + "é" * 60 + ".txt"]
    with pytest.raises(UnsafeKeyError, match="longer than 255 bytes"):
        store.write_bytes("p/" + "é" * 128, b"x")  # 256 bytes
    assert [e.key for e in store.list("p")] == ["p/" + "d" * 200]  # nothing else was written


def test_missing_keys_say_so(store: JobStore, tmp_path: Path) -> None:
    with pytest.raises(MissingKeyError, match="no such key 'nope'"):
        store.download("nope", tmp_path)
    with pytest.raises(MissingKeyError):
        store.read_bytes("nope")


def _outside(tmp_path: Path) -> Path:
    """A folder beside the store with a file no key may reach."""
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "file.txt").write_text("outside the store\n")
    (outside / "deep" / "file.txt").write_text("deeper outside\n")
    return outside


@pytest.mark.parametrize("link", ["link", "data/link"], ids=["depth1", "depth2"])
def test_a_linked_folder_at_any_depth_is_never_followed(store: JobStore, tmp_path: Path, link: str) -> None:
    outside = _outside(tmp_path)
    root = Path(store.root)
    (root / "data").mkdir()
    (root / "data" / "ok.txt").write_text("ok\n")
    (root / link).symlink_to(outside, target_is_directory=True)
    refused = f"'{link}' is a symbolic link inside the job store; links are never followed"
    dst = tmp_path / "dst"
    dst.mkdir()
    for key in (f"{link}/file.txt", f"{link}/deep/file.txt", f"{link}/deep"):
        with pytest.raises(UnsafeKeyError, match=refused) as info:
            store.download(key, dst)
        assert isinstance(info.value, UserError)
        for call in (store.files, store.exists, store.require, store.is_dir, store.read_bytes):
            with pytest.raises(UnsafeKeyError, match=refused):
                call(key)
        with pytest.raises(UnsafeKeyError, match=refused):
            store.list(key, recursive=True)
        with pytest.raises(UnsafeKeyError, match=refused):
            store.copy(key, "copied.txt")
        with pytest.raises(UnsafeKeyError, match=refused):
            store.remove(key, recursive=True)
    assert list(dst.iterdir()) == []
    assert not store.exists("copied.txt")
    # Writing through the link is refused as well: nothing lands outside.
    with pytest.raises(UnsafeKeyError, match=refused):
        store.write_bytes(f"{link}/new.txt", b"x")
    src = tmp_path / "new.txt"
    src.write_text("x")
    with pytest.raises(UnsafeKeyError, match=refused):
        store.upload_tree(src, f"{link}/sub")
    assert sorted(p.name for p in outside.iterdir()) == ["deep", "file.txt"]
    assert (outside / "file.txt").read_text() == "outside the store\n"
    # Listings skip the link: they never descend into it, recursive or not.
    assert [e.key for e in store.list("", recursive=True)] == ["data/ok.txt"]
    assert [k for k, _ in store.files("")] == ["data/ok.txt"]
    parent = link.rpartition("/")[0]
    assert link not in [e.key for e in store.list(parent)]
    # The link itself is not an entry of the store.
    assert not store.exists(link)
    with pytest.raises(MissingKeyError):
        store.files(link)


def test_a_link_to_a_folder_inside_the_store_is_refused_too(store: JobStore, tmp_path: Path) -> None:
    root = Path(store.root)
    (root / "real").mkdir()
    (root / "real" / "f.txt").write_text("inside\n")
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    with pytest.raises(UnsafeKeyError, match="'alias' is a symbolic link inside the job store"):
        store.download("alias/f.txt", tmp_path / "dst")
    with pytest.raises(UnsafeKeyError, match="'alias' is a symbolic link"):
        store.require("alias/f.txt")
    assert [e.key for e in store.list("", recursive=True)] == ["real/f.txt"]
    assert [e.key for e in store.list("")] == ["real"]
    assert store.download("real/f.txt", tmp_path / "dst")[0].key == "real/f.txt"


def test_a_file_read_through_its_own_link_is_refused(store: JobStore, tmp_path: Path) -> None:
    (Path(store.root) / "evil").symlink_to(_outside(tmp_path) / "file.txt")
    with pytest.raises(UnsafeKeyError, match="'evil' is a symbolic link"):
        store.read_bytes("evil")
    with pytest.raises(MissingKeyError):
        store.download("evil", tmp_path / "dst")
    with pytest.raises(UnsafeKeyError, match="'evil' is a symbolic link"):
        store.copy("evil", "copied")


def test_the_store_root_itself_may_be_a_link(tmp_path: Path) -> None:
    real = tmp_path / "private" / "store"
    real.mkdir(parents=True)
    (tmp_path / "store").symlink_to(real, target_is_directory=True)
    store = JobStore(str(tmp_path / "store"))
    src = tmp_path / "a.txt"
    src.write_text("alpha")
    store.upload_tree(src, "in/sub")
    store.upload_file(src, "in/b.txt")
    assert [e.key for e in store.list("", recursive=True)] == ["in/b.txt", "in/sub/a.txt"]
    assert store.download("in", tmp_path / "dst")
    assert (tmp_path / "dst" / "in" / "sub" / "a.txt").read_text() == "alpha"
    assert store.copy("in/b.txt", "c/b.txt").size == 5
    assert store.read_bytes("c/b.txt") == b"alpha"
    assert store.remove("in", recursive=True) == 2
    assert (real / "c" / "b.txt").is_file()


def test_upload_file_stores_exactly_the_key(store: JobStore, tmp_path: Path) -> None:
    src = tmp_path / "b.yaml"
    src.write_text("x: 1\n")
    rec = store.upload_file(src, "a/b.yaml")
    assert rec.key == "a/b.yaml" and rec.size == 5
    assert [(e.key, e.type) for e in store.list("a")] == [("a/b.yaml", "file")]
    with pytest.raises(UserError, match="a folder of that name exists"):
        store.upload_file(src, "a")
    with pytest.raises(UserError, match="'a/b.yaml' is a file, not a folder"):
        store.upload_file(src, "a/b.yaml/c")
