"""What every transfer shares: the `Transfer` protocol, its errors, sizes, retries and checks.

A transfer moves one file between this machine and a job store: streamed, hashed in the same
pass, verified against the byte count (and the stored SHA-256 where the store keeps one), and
retried with exponential backoff on transient errors (5xx, throttling, dropped connections).
The implementations: `jobcloud.blocks.transfer.local`, `jobcloud.blocks.transfer.generic` (any fsspec
filesystem), `jobcloud.blocks.transfer.s3`; `jobcloud.blocks.transfer.factory.transfer_for` picks one.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from jobcloud.blocks.errors import MissingKeyError, StorageError, UserError

log = logging.getLogger("jobcloud.transfer")

Progress = Callable[[int], None]
"""Called with the number of bytes just transferred (negative: taken back after a failure)."""
T = TypeVar("T")

CHUNK = 8 * 1024 * 1024
"""Multipart part size and streaming chunk size."""
SMALL = 8 * 1024 * 1024
"""Local files up to this size are read whole (bounded) in one call."""
SINGLE = 64 * 1024 * 1024
"""S3 objects up to this size move in one streamed request (fewer round trips than parts);
larger ones go multipart / as concurrent ranged GETs."""
TINY = 1024 * 1024
ATTEMPTS = 5


class TransferError(StorageError):
    """A file could not be transferred, or arrived different from what was sent."""


class StoreAccessError(StorageError, UserError):
    """The store refused the credentials, or the bucket does not exist: fix the settings."""


class Transfer(Protocol):
    """How a `JobStore` moves files. Paths are backend paths (``bucket/prefix/key`` or a
    local path); every call returns ``(size, sha256)`` of what was moved.

    ``dir_fd`` arguments are for local stores only (the path is then a name inside that open
    folder, so no link on the way is followed); object stores always get None.
    """

    def check(self, root: str) -> None:
        """Raise a clear `StoreAccessError` if the store cannot be used at all."""

    def upload(self, local: Path, path: str, progress: Progress, dir_fd: int | None = None) -> tuple[int, str]:
        """Copy the local file ``local`` to ``path`` in the store."""

    def download(
        self, path: str, dest: Path, progress: Progress, size_hint: int | None = None, dir_fd: int | None = None
    ) -> tuple[int, str]:
        """Copy the store file ``path`` to the local file ``dest``."""

    def copy_within(
        self, src: str, dest: str, sha256: str | None, src_dir_fd: int | None = None, dest_dir_fd: int | None = None
    ) -> tuple[int, str | None]:
        """Copy a store file to another store path; the SHA-256 is None where unknown."""

    def put_bytes(self, path: str, data: bytes) -> str | None:
        """Write a small object whole in one request; its SHA-256, or None where this
        transfer has no such request (the store then writes through its filesystem)."""


# -- retries ----------------------------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    """Whether trying again may help: 5xx, throttling, timeouts, dropped connections."""
    if isinstance(exc, (StoreAccessError, MissingKeyError, UnicodeError)):
        return False
    if isinstance(exc, TransferError):
        return getattr(exc, "transient", False)
    try:
        # botocore is optional (the s3 extra), so it is looked for only here.
        from botocore.exceptions import ClientError, HTTPClientError, ReadTimeoutError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        if isinstance(exc, (BotoConnectionError, HTTPClientError, ReadTimeoutError)):
            return True
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return status >= 500 or status == 429 or err.get("Code") in THROTTLE_CODES
    except ImportError:  # no boto: only the generic cases below
        pass
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    text = str(exc)
    return any(s in text for s in ("503", "502", "500 ", "SlowDown", "Throttl", "reset by peer"))


THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
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


# -- checks -----------------------------------------------------------------------------


def no_progress(_: int) -> None:
    """A `Progress` that ignores what it is told."""
    return None


def tmp_beside(dest: Path) -> Path:
    """A fresh hidden name next to ``dest`` to write into before renaming to ``dest``."""
    return dest.with_name(f".{dest.name}.part-{uuid.uuid4().hex[:8]}")


def check_size(what: str, got: int, expected: int | None) -> None:
    """Raise a transient `TransferError` if ``got`` bytes are not the ``expected`` ones."""
    if expected is not None and got != expected:
        exc = TransferError(f"{what}: got {got} bytes, the store says {expected}; not kept")
        exc.transient = True  # a cut connection: trying again may well work
        raise exc


def check_sha(what: str, got: str, expected: str | None) -> None:
    """Raise a `TransferError` if the SHA-256 ``got`` differs from a known ``expected`` one."""
    if expected and got != expected:
        raise TransferError(f"{what}: SHA-256 {got[:16]}... differs from the stored {expected[:16]}...; not kept")
