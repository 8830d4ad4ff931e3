"""A file arriving in the job store piece by piece (an HTTP upload): `JobStore.open_write`.

On a local store the bytes go straight to a hidden name (`.NAME.part-*`, left out of listings)
in the deepest existing folder of the key's path (so the same filesystem, and no new folder
until the file is whole), hashed as they come; `commit` fsyncs the file, makes the key's
folders and renames it into place (`os.replace`: readers see the old file or the whole new one,
never a part), and records the SHA-256 like any other upload, so a later staging of it needs no
second hash. Nothing is copied a second time. On an object store the bytes are spooled to a local temp file and
uploaded whole on `commit` (the store's transfer: hashed, verified, multipart, retried).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jobcloud.blocks.errors import StorageError

_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Start the disk writing this often while the file arrives.
WRITEBACK_EVERY = 64 * 1024 * 1024


def _libc_call(name: str) -> Callable[[int, int, int], int] | None:
    """``name``(fd, offset, length) from libc (Linux): sync_file_range, fallocate; None where
    there is none. Returns 0, or -1 (and the error stays in errno, ignored: both are hints)."""
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    if name == "sync_file_range":  # (fd, offset, nbytes, flags)
        fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
        return lambda fd, offset, length: int(fn(fd, offset, length, 2))  # SYNC_FILE_RANGE_WRITE: start, do not wait
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]  # (fd, mode, offset, len)
    return lambda fd, offset, length: int(fn(fd, 0, offset, length))


# Starts the disk writing a range and returns at once: commit's fsync then waits only for the
# last stretch instead of the whole file.
_start_writeback = _libc_call("sync_file_range")
# Reserves blocks ahead of the writes when the size is announced (RESERVE at a time): ext4 then
# need not allocate them page by page as the bytes come (0.2 s instead of 0.3-3 s per GiB
# here). fallocate(2), not posix_fallocate: where a filesystem cannot, that one writes zeros.
_preallocate = _libc_call("fallocate")
RESERVE = 64 * 1024 * 1024


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class IncomingFile:
    """One file being written; `write` from one thread at a time, then `commit` or `discard`.

    Local store: ``dir_fd`` (owned from here on) is the open store folder to write in, and
    ``place(key, dir_fd, tmp_name)`` renames the finished file to the key. Object store:
    ``dir_fd`` is None, the file is spooled in ``spool_dir`` and ``upload(path)`` stores it."""

    def __init__(
        self,
        key: str,
        dir_fd: int | None,
        name: str,
        place: Callable[[str, int, str], None] | None = None,
        upload: Callable[[Path], Any] | None = None,
        spool_dir: Path | None = None,
        size_hint: int | None = None,
    ) -> None:
        self.key = key
        self.size = 0
        self._sha = hashlib.sha256()
        self._dir_fd = dir_fd
        self._place = place
        self._upload = upload
        self._flushed = 0
        self._done = False
        if dir_fd is not None:
            self._tmp = f".{name}.part-{uuid.uuid4().hex[:8]}"
            self._fd = os.open(self._tmp, _TMP_FLAGS, 0o644, dir_fd=dir_fd)
        else:
            if spool_dir is not None:
                spool_dir.mkdir(parents=True, exist_ok=True)
            self._fd, self._tmp = tempfile.mkstemp(prefix="jobcloud-upload-", dir=spool_dir)
        self._size_hint = size_hint or 0
        self._reserved = 0
        self._reserve(0)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def _reserve(self, upcoming: int) -> None:
        """Reserve the announced size ahead of the writes, a stretch at a time (a client that
        announces 60 GiB and sends nothing holds 64 MiB, not 60 GiB)."""
        if _preallocate is None or self._reserved >= self._size_hint or self.size + upcoming <= self._reserved - RESERVE // 2:
            return
        end = min(self._size_hint, max(self._reserved, self.size + upcoming) + RESERVE)
        if _preallocate(self._fd, self._reserved, end - self._reserved) == 0:
            self._reserved = end
        else:
            self._size_hint = 0  # no support or no space: the writes allocate as they go

    def write(self, parts: Sequence[bytes]) -> None:
        """Append ``parts``. Joined first: hashlib and the write let go of the GIL while they
        work, and each call must take it back from the event loop that keeps receiving (up to
        a switch interval, 5 ms): two long calls per batch, not two per piece."""
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._reserve(len(data))
        self._sha.update(data)
        try:
            _write_all(self._fd, data)
        except OSError as exc:  # a full disk...: the platform's failure, not the user's
            raise StorageError(f"cannot store {self.key!r}: {exc}") from exc
        self.size += len(data)
        if self._dir_fd is not None and _start_writeback is not None and self.size - self._flushed >= WRITEBACK_EVERY:
            _start_writeback(self._fd, self._flushed, self.size - self._flushed)
            self._flushed = self.size

    def commit(self) -> Any:
        """Put the file under its key; returns the store's `FileRecord`."""
        from jobcloud.blocks.store.job_store import FileRecord
        from jobcloud.blocks.transfer.local import write_hash_xattr

        try:
            if self._reserved > self.size:
                os.ftruncate(self._fd, self.size)  # fewer bytes came than were announced
            if self._dir_fd is None:
                os.close(self._fd)
                self._fd = -1
                assert self._upload is not None
                return self._upload(Path(self._tmp))
            try:
                write_hash_xattr(self._fd, self.sha256)
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1
            except OSError as exc:
                raise StorageError(f"cannot store {self.key!r}: {exc}") from exc
            assert self._place is not None
            self._place(self.key, self._dir_fd, self._tmp)
            self._done = True
            return FileRecord(key=self.key, size=self.size, sha256=self.sha256)
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop what was written (a no-op after `commit`); releases the descriptors."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if not self._done:
            try:
                os.unlink(self._tmp, dir_fd=self._dir_fd)
            except FileNotFoundError:
                pass
            self._done = True
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def __enter__(self) -> IncomingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()
