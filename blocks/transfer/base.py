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

# -- the retry budget of one file transfer (docs/job-stores.md#retries) -------------------
# `retrying` is the ONE layer that retries a transient store error: the S3 client's own
# request retries are off (`jobcloud.blocks.transfer.s3`) and the job's stage-inputs and
# upload-outputs tasks have no Prefect retries (`jobcloud.flows.job`), so these numbers are
# the whole story of one S3 file. GCS is the exception: gcsfs retries every request itself
# (it cannot be turned off), so `FsspecTransfer` adds no loop of its own.
ATTEMPTS = 5
"""Attempts of one file transfer (the first one included) before it gives up."""
BACKOFF_BASE_S = 1.0
"""Wait before the second attempt; it doubles before each next one..."""
BACKOFF_MAX_S = 8.0
"""...up to this many seconds."""
JITTER_MAX = 1.5
"""Each wait is multiplied by a random factor in [0.5, JITTER_MAX) so that many failed
transfers do not come back at the same instant."""


def worst_case_wait_s(attempts: int = ATTEMPTS, base: float = BACKOFF_BASE_S) -> float:
    """The most seconds `retrying` sleeps in all before giving up after ``attempts``."""
    return sum(min(base * 2**i, BACKOFF_MAX_S) * JITTER_MAX for i in range(attempts - 1))


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
    last = getattr(exc, "last_exception", None)
    if isinstance(last, BaseException):
        # s3transfer's RetriesExceededError (its own download retries are off): what it wraps.
        return is_transient(last)
    try:
        # botocore is optional (the s3 extra), so it is looked for only here.
        from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError, ReadTimeoutError, ResponseStreamingError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        if isinstance(exc, (BotoConnectionError, HTTPClientError, ReadTimeoutError, IncompleteReadError, ResponseStreamingError)):
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


def retrying(what: str, fn: Callable[[], T], attempts: int | None = None, base: float | None = None) -> T:
    """Call ``fn``; on a transient error wait (exponential backoff, jitter) and call again,
    at most ``attempts`` calls in all (default `ATTEMPTS`; waits: see `worst_case_wait_s`)."""
    # Read at call time, not bound as defaults, so that a patched module constant counts.
    attempts = attempts or ATTEMPTS
    base = BACKOFF_BASE_S if base is None else base
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            if attempt == attempts or not is_transient(exc):
                raise
            delay = min(base * 2 ** (attempt - 1), BACKOFF_MAX_S) * (0.5 + (JITTER_MAX - 0.5) * random.random())
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
