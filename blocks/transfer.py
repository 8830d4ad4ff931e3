"""Moving one file between this machine and a job store: streamed, hashed, verified, retried.

Three ways, chosen by the store's filesystem:

- `LocalTransfer`: the kernel copies (``copy_file_range``) while a second thread hashes the
  same bytes from the page cache. A file that entered the store through JobCloud carries its
  SHA-256 in an extended attribute (with the size and mtime it belongs to), so staging it
  again needs no second hash (``rehash=True`` forces one).
- `blocks.transfer_s3.S3Transfer`: boto3's transfer manager (multipart, bounded concurrency) fed by a
  sequential hashing reader, and draining into a sequential hashing writer, so the whole
  file is never in memory and the SHA-256 comes out of the same pass. Small objects go in one
  PUT whose ``x-amz-checksum-sha256`` the server verifies; every object carries its SHA-256
  (metadata, or a tag for multipart ones) and downloads are checked against it.
- `FsspecTransfer`: any other fsspec filesystem (gcsfs...): chunked streams through
  ``fs.open``; the backend's own multipart/resumable upload publishes the object at close.

Every transfer checks the byte count against what the store reports, and is retried with
exponential backoff on transient errors (5xx, throttling, dropped connections).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, TypeVar

from flows.errors import MissingKeyError, StorageError, UserError

log = logging.getLogger("jobcloud.transfer")

Progress = Callable[[int], None]
T = TypeVar("T")

CHUNK = 8 * 1024 * 1024
"""Multipart part size and streaming chunk size."""
SMALL = 8 * 1024 * 1024
"""Local files up to this size are read whole (bounded) in one call."""
SINGLE = 64 * 1024 * 1024
"""S3 objects up to this size move in one streamed request (fewer round trips than parts);
larger ones go multipart / as concurrent ranged GETs."""
TINY = 1024 * 1024
HASH_XATTR = "user.jobcloud.sha256"
ATTEMPTS = 5


class TransferError(StorageError):
    """A file could not be transferred, or arrived different from what was sent."""


class StoreAccessError(StorageError, UserError):
    """The store refused the credentials, or the bucket does not exist: fix the settings."""


# -- retries ----------------------------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    """Whether trying again may help: 5xx, throttling, timeouts, dropped connections."""
    if isinstance(exc, (StoreAccessError, MissingKeyError, UnicodeError)):
        return False
    if isinstance(exc, TransferError):
        return getattr(exc, "transient", False)
    try:
        from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError, ReadTimeoutError

        if isinstance(exc, (BotoConnectionError, HTTPClientError, ReadTimeoutError)):
            return True
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return status >= 500 or status == 429 or err.get("Code") in _THROTTLE_CODES
    except ImportError:  # no boto: only the generic cases below
        pass
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    text = str(exc)
    return any(s in text for s in ("503", "502", "500 ", "SlowDown", "Throttl", "reset by peer"))


_THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
                   "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequests"}  # fmt: skip


def retrying(what: str, fn: Callable[[], T], attempts: int | None = None, base: float = 0.5) -> T:
    """Call ``fn``; on a transient error wait (exponential backoff, jitter) and call again."""
    attempts = attempts or ATTEMPTS
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            if attempt == attempts or not is_transient(exc):
                raise
            delay = min(base * 2 ** (attempt - 1), 8.0) * (0.5 + random.random())
            log.warning("%s failed (%s); retry %d/%d in %.1fs", what, exc, attempt, attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


# -- helpers ----------------------------------------------------------------------------


def _noop(_: int) -> None:
    return None


def _tmp_beside(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.part-{uuid.uuid4().hex[:8]}")


def _check_size(what: str, got: int, expected: int | None) -> None:
    if expected is not None and got != expected:
        exc = TransferError(f"{what}: got {got} bytes, the store says {expected}; not kept")
        exc.transient = True  # a cut connection: trying again may well work
        raise exc


def _check_sha(what: str, got: str, expected: str | None) -> None:
    if expected and got != expected:
        raise TransferError(
            f"{what}: SHA-256 {got[:16]}... differs from the stored {expected[:16]}...; not kept"
        )


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
    """Copies between two local paths; the store side is ``store_path``."""

    def __init__(self, rehash: bool = False) -> None:
        self.rehash = rehash
        self._pool: Any = None
        self._lock = threading.Lock()

    def _hasher_pool(self) -> Any:
        from concurrent.futures import ThreadPoolExecutor

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
        target = _tmp_beside(dest) if atomic else dest
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
                _check_size(str(src), os.fstat(fout).st_size, size)
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

    def upload(self, local: Path, store_path: str, progress: Progress, dir_fd: int | None = None) -> tuple[int, str]:
        """Copy a local file into the store (``store_path`` relative to ``dir_fd`` if given)."""
        dest = Path(store_path)
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
            size, digest = self.copy(Path(src), Path(dest), _noop, known_sha=known, src_fd=fin, dest_dir_fd=dest_dir_fd)
        finally:
            os.close(fin)
        write_hash_xattr(dest, digest, dir_fd=dest_dir_fd)
        return size, digest

    def download(
        self, store_path: str, dest: Path, progress: Progress, size_hint: int | None = None, dir_fd: int | None = None
    ) -> tuple[int, str]:
        """Copy a store file (``store_path`` relative to ``dir_fd`` if given) to ``dest``."""
        # One descriptor for the hash attribute and the bytes: both come from the same file.
        fin = os.open(store_path, _READ_FLAGS, dir_fd=dir_fd)
        try:
            big = size_hint is None or size_hint > SMALL
            known = read_hash_xattr(fin) if big and not self.rehash else None
            size, digest = self.copy(Path(store_path), dest, progress, known_sha=known, atomic=False, src_fd=fin)
            if known is None and not self.rehash and size > SMALL:
                write_hash_xattr(fin, digest)  # next staging of this file skips the hash
        finally:
            os.close(fin)
        return size, digest


# -- any fsspec filesystem (GCS...) -----------------------------------------------------


class FsspecTransfer:
    """Chunked streams through ``fs.open``; the object appears when the upload closes."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def check(self, path: str) -> None:
        """Raise a clear `StoreAccessError` if the bucket is missing or access is refused."""
        bucket = path.split("/", 1)[0]
        try:
            ok = self.fs.exists(bucket)
        except PermissionError as exc:
            raise StoreAccessError(f"the store refused the credentials for bucket {bucket!r}: {exc}") from None
        except Exception as exc:  # noqa: BLE001
            raise TransferError(f"the store cannot be reached to check bucket {bucket!r}: {exc}") from None
        if not ok:
            raise StoreAccessError(f"the bucket {bucket!r} does not exist")

    def upload(self, local: Path, path: str, progress: Progress) -> tuple[int, str]:
        return retrying(f"upload of {local.name}", lambda: self._upload_once(local, path, progress))

    def _upload_once(self, local: Path, path: str, progress: Progress) -> tuple[int, str]:
        h = hashlib.sha256()
        size = 0
        try:
            with open(local, "rb") as src, self.fs.open(path, "wb", block_size=CHUNK) as out:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    progress(len(chunk))
        except BaseException:
            progress(-size)
            raise
        self.fs.invalidate_cache(path)
        _check_size(f"upload of {local.name}", int(self.fs.size(path)), size)
        return size, h.hexdigest()

    def download(self, path: str, dest: Path, progress: Progress, size_hint: int | None = None) -> tuple[int, str]:
        return retrying(f"download of {path}", lambda: self._download_once(path, dest, progress))

    def _download_once(self, path: str, dest: Path, progress: Progress) -> tuple[int, str]:
        tmp = _tmp_beside(dest)
        h = hashlib.sha256()
        size = 0
        try:
            with self.fs.open(path, "rb", block_size=CHUNK, cache_type="none") as src, open(tmp, "wb") as out:
                expected = getattr(src, "size", None)
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    progress(len(chunk))
            _check_size(f"download of {path}", size, expected)
            os.replace(tmp, dest)
        except BaseException:
            progress(-size)
            raise
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        return size, h.hexdigest()


def transfer_for(fs: Any, concurrency: int, rehash: bool = False) -> Any:
    """The transfer implementation for an fsspec filesystem."""
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        return LocalTransfer(rehash=rehash)
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    if "s3" in protocols:
        try:
            from blocks.transfer_s3 import S3Transfer

            return S3Transfer(fs, concurrency)
        except ImportError:  # s3fs without boto3: the generic path still works
            pass
    return FsspecTransfer(fs)
