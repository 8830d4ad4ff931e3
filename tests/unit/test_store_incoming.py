"""`JobStore.open_write` on a local store (what an HTTP upload writes into): the bytes land in a
hidden file inside the store and are renamed into place whole, with their SHA-256 recorded;
discarded, they leave nothing (no new folder either); links on the way are never followed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from jobcloud.blocks.errors import UnsafeKeyError, UserError
from jobcloud.blocks.store import incoming
from jobcloud.blocks.store.job_store import JobStore
from jobcloud.blocks.transfer.local import read_hash_xattr

MiB = 1024 * 1024


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(str(tmp_path / "store"))


def _has_user_xattrs(folder: Path) -> bool:
    probe = folder / "xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


def _everything(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_written_in_place_then_renamed_whole(store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incoming, "WRITEBACK_EVERY", 1 * MiB)  # the early writeback runs too
    root = tmp_path / "store"
    (root / "users").mkdir(parents=True)
    data = [os.urandom(MiB // 2 + i) for i in range(5)]
    f = store.open_write("users/alice/runs/a.bin")
    f.write(data[:2])
    f.write(data[2:])
    # Meanwhile: a hidden part file in the deepest folder that exists, nothing under the key.
    assert not store.exists("users/alice") and store.list("users") == []
    assert [p.name.startswith(".a.bin.part-") for p in (root / "users").iterdir()] == [True]
    record = f.commit()
    whole = b"".join(data)
    assert (record.key, record.size, record.sha256) == ("users/alice/runs/a.bin", len(whole), hashlib.sha256(whole).hexdigest())
    assert (root / "users/alice/runs/a.bin").read_bytes() == whole
    assert _everything(root) == ["users", "users/alice", "users/alice/runs", "users/alice/runs/a.bin"]
    # The SHA-256 is recorded like any upload's: staging the file later does not hash it again.
    if _has_user_xattrs(tmp_path):
        assert read_hash_xattr(root / "users/alice/runs/a.bin") == record.sha256
    # Written again: replaced whole.
    g = store.open_write("users/alice/runs/a.bin")
    g.write([b"new"])
    g.commit()
    assert (root / "users/alice/runs/a.bin").read_bytes() == b"new"


def test_discarded_leaves_nothing(store: JobStore, tmp_path: Path) -> None:
    f = store.open_write("users/bob/deep/er/x.bin")
    f.write([b"partial"])
    f.discard()
    f.discard()  # twice is fine
    assert _everything(tmp_path / "store") == []


def test_folders_files_and_links_in_the_way(store: JobStore, tmp_path: Path) -> None:
    root = tmp_path / "store"
    store.write_bytes("d/x", b"1")
    with pytest.raises(UserError, match="folder"):
        store.open_write("d")  # a folder of that name
    with pytest.raises(UserError, match="not a folder"):
        store.open_write("d/x/y")  # a file where a folder should be
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(UnsafeKeyError):
        store.open_write("link/x.bin")
    # A folder that appears where the file goes, while it is written: refused at commit.
    f = store.open_write("e/f")
    f.write([b"data"])
    (root / "e" / "f").mkdir(parents=True)
    with pytest.raises(UserError, match="folder"):
        f.commit()
    assert list(outside.iterdir()) == [] and not any(".part-" in p.name for p in root.rglob("*"))


def test_an_announced_size_is_reserved_ahead_and_the_file_ends_at_what_came(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(incoming, "RESERVE", 1 * MiB)
    root = tmp_path / "store"
    f = store.open_write("a/big.bin", size_hint=100 * MiB)  # announced, then not all sent
    part = root / next(p.name for p in root.iterdir())
    if incoming._preallocate is not None:
        assert part.stat().st_size <= 1 * MiB  # a stretch reserved, not the 100 MiB announced
    data = os.urandom(3 * MiB + 5)
    f.write([data[: 2 * MiB], data[2 * MiB :]])
    assert f.commit().size == len(data)
    assert (root / "a/big.bin").read_bytes() == data  # nothing reserved is left at its end
    g = store.open_write("a/small.bin", size_hint=3)  # more than announced: written all the same
    g.write([b"12345"])
    g.commit()
    assert (root / "a/small.bin").read_bytes() == b"12345"
