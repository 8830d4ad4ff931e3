"""Transfers to and from a job store on the local disk.

The kernel copies (``copy_file_range``) while a second thread hashes the same bytes from the
page cache. A file that entered the store through JobCloud carries its SHA-256 in an extended
attribute (with the size and mtime it belongs to), so staging it again needs no second hash
(``rehash=True`` forces one). Neither end of a copy is ever a followed symlink.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from jobcloud.blocks.transfer.base import CHUNK, SMALL, Progress, TransferError, check_size, no_progress, tmp_beside

HASH_XATTR = "user.jobcloud.sha256"


def read_hash_xattr(path: str | Path | int, st: os.stat_result | None = None) -> str | None:
    """The SHA-256 recorded on a store file (a path, or an open descriptor), if it still
    belongs to its size and mtime."""
    try:
        if isinstance(path, int):
            raw = os.getxattr(path, HASH_XATTR).decode()
            st = st or os.fstat(path)
        else:
            raw = os.getxattr(path, HASH_XATTR, follow_symlinks=False).decode()
            st = st or os.stat(path, follow_symlinks=False)
    except (OSError, AttributeError):
        return None
    size, mtime, digest = raw.split(":", 2) if raw.count(":") == 2 else ("", "", "")
    if size == str(st.st_size) and mtime == str(st.st_mtime_ns) and len(digest) == 64:
        return digest
    return None


def write_hash_xattr(path: str | Path | int, digest: str, dir_fd: int | None = None) -> None:
    """Remember a store file's SHA-256 next to its size and mtime (best effort).

    ``path`` is a path, an open descriptor, or a name relative to the folder ``dir_fd``.
    """
    try:
        if isinstance(path, int):
            st = os.fstat(path)
            os.setxattr(path, HASH_XATTR, f"{st.st_size}:{st.st_mtime_ns}:{digest}".encode())
        elif dir_fd is not None:
            # setxattr takes no dir_fd: open the name (never through a link) and tag the fd.
            fd = os.open(path, _READ_FLAGS, dir_fd=dir_fd)
            try:
                write_hash_xattr(fd, digest)
            finally:
                os.close(fd)
        else:
            st = os.stat(path, follow_symlinks=False)
            os.setxattr(path, HASH_XATTR, f"{st.st_size}:{st.st_mtime_ns}:{digest}".encode(), follow_symlinks=False)
    except (OSError, AttributeError):
        pass  # filesystems without user xattrs just hash again next time


# -- local disk -------------------------------------------------------------------------

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def _kernel_copy(src_fd: int, dst_fd: int, size: int) -> None:
    """Copy ``size`` bytes inside the kernel (copy_file_range, else sendfile)."""
    done = 0
    use_cfr = hasattr(os, "copy_file_range")
    while done < size:
        n = min(size - done, 1 << 30)
        try:
            if use_cfr:
                sent = os.copy_file_range(src_fd, dst_fd, n, done, done)
            else:
                sent = os.sendfile(dst_fd, src_fd, done, n)
        except OSError:
            if not use_cfr:
                raise
            use_cfr = False  # e.g. across filesystems on old kernels
            continue
        if sent == 0:
            break
        done += sent
    if done != size:
        raise TransferError(f"the file shrank while being copied ({done} of {size} bytes)")


def _read_all(fd: int, size: int) -> bytes:
    parts = []
    while chunk := os.read(fd, max(size, 1) + 1):
        parts.append(chunk)
    return b"".join(parts) if len(parts) != 1 else parts[0]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _hash_fd(fd: int, size: int, progress: Progress) -> str:
    h = hashlib.sha256()
    buf = bytearray(min(CHUNK, max(size, 1)))
    view = memoryview(buf)
    done = 0
    while done < size:
        n = os.preadv(fd, [view], done)
        if n == 0:
            break
        h.update(view[:n])  # hashlib lets go of the GIL: the copy thread runs meanwhile
        done += n
        progress(n)
    return h.hexdigest()


class LocalTransfer:
    """Copies between two local paths (the store side may be a name inside an open folder)."""

    def __init__(self, rehash: bool = False) -> None:
        self.rehash = rehash
        self._pool: Any = None
        self._lock = threading.Lock()

    def _hasher_pool(self) -> Any:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="jobcloud-copy")
            return self._pool

    def copy(
        self,
        src: Path,
        dest: Path,
        progress: Progress,
        known_sha: str | None = None,
        atomic: bool = True,
        *,
        src_fd: int | None = None,
        dest_dir_fd: int | None = None,
    ) -> tuple[int, str]:
        """Copy ``src`` to ``dest``; (size, sha256). ``atomic``: write beside, then rename
        (the store's readers never see a partial file); otherwise write in place and remove
        it on failure. Neither end is ever a followed symlink. Plain fds, not Python file
        objects: for ten thousand small files the per-open cost is what counts.

        ``src_fd``: read this open descriptor (left open) instead of opening ``src``, which
        then only names it in messages. ``dest_dir_fd``: ``dest`` is a name inside that
        folder; the job store opens its folders one name at a time so no link is followed.
        """
        target = tmp_beside(dest) if atomic else dest
        fin = src_fd if src_fd is not None else os.open(src, _READ_FLAGS)
        try:
            size = os.fstat(fin).st_size
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            fout = os.open(target, flags | (os.O_EXCL if atomic else 0), 0o644, dir_fd=dest_dir_fd)
            done = False
            try:
                if size <= SMALL:
                    # One read, one hash, one write: the cheapest for the many small files.
                    data = _read_all(fin, size)
                    digest = known_sha or hashlib.sha256(data).hexdigest()
                    _write_all(fout, data)
                    size = len(data)
                    progress(size)
                elif known_sha:
                    _kernel_copy(fin, fout, size)
                    digest = known_sha
                    progress(size)
                else:
                    # The kernel copies while this thread hashes the same pages.
                    copying = self._hasher_pool().submit(_kernel_copy, fin, fout, size)
                    digest = _hash_fd(fin, size, progress)
                    copying.result()
                check_size(str(src), os.fstat(fout).st_size, size)
                done = True
            finally:
                os.close(fout)
                if not done:
                    os.unlink(target, dir_fd=dest_dir_fd)
        finally:
            if src_fd is None:
                os.close(fin)
        if atomic:
            os.replace(target, dest, src_dir_fd=dest_dir_fd, dst_dir_fd=dest_dir_fd)
        return size, digest

    def check(self, root: str) -> None:
        """Nothing to check: a local folder has no credentials or buckets."""

    def put_bytes(self, path: str, data: bytes) -> None:
        """None: the local store writes small files itself (beside, then renamed)."""
        return None

    def upload(self, local: Path, path: str, progress: Progress, dir_fd: int | None = None) -> tuple[int, str]:
        """Copy a local file into the store (``path`` relative to ``dir_fd`` if given)."""
        dest = Path(path)
        size, digest = self.copy(local, dest, progress, dest_dir_fd=dir_fd)
        if size > SMALL:  # small files are hashed again faster than an xattr is kept
            write_hash_xattr(dest, digest, dir_fd=dir_fd)
        return size, digest

    def copy_within(
        self, src: str, dest: str, sha256: str | None, src_dir_fd: int | None = None, dest_dir_fd: int | None = None
    ) -> tuple[int, str]:
        """Copy a store file to another store path; (size, sha256). Each path is relative
        to its ``*_dir_fd`` when given."""
        fin = os.open(src, _READ_FLAGS, dir_fd=src_dir_fd)
        try:
            known = sha256 or read_hash_xattr(fin)
            size, digest = self.copy(Path(src), Path(dest), no_progress, known_sha=known, src_fd=fin, dest_dir_fd=dest_dir_fd)
        finally:
            os.close(fin)
        write_hash_xattr(dest, digest, dir_fd=dest_dir_fd)
        return size, digest

    def download(
        self, path: str, dest: Path, progress: Progress, size_hint: int | None = None, dir_fd: int | None = None
    ) -> tuple[int, str]:
        """Copy a store file (``path`` relative to ``dir_fd`` if given) to ``dest``."""
        # One descriptor for the hash attribute and the bytes: both come from the same file.
        fin = os.open(path, _READ_FLAGS, dir_fd=dir_fd)
        try:
            big = size_hint is None or size_hint > SMALL
            known = read_hash_xattr(fin) if big and not self.rehash else None
            size, digest = self.copy(Path(path), dest, progress, known_sha=known, atomic=False, src_fd=fin)
            if known is None and not self.rehash and size > SMALL:
                write_hash_xattr(fin, digest)  # next staging of this file skips the hash
        finally:
            os.close(fin)
        return size, digest
