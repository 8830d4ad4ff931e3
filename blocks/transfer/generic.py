"""Transfers through any fsspec filesystem (gcsfs...): chunked streams through ``fs.open``;
the backend's own multipart/resumable upload publishes the object at close.

Like S3's, every uploaded object carries its SHA-256, here as custom metadata ``sha256``
(where the filesystem can set metadata: gcsfs's ``setxattrs``), and downloads compare the
bytes they received against it and against the size.

No retry loop here: gcsfs retries every HTTP request itself (6 attempts, fixed inside gcsfs),
and a loop around it would multiply that budget (docs/job-stores.md#retries).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from jobcloud.blocks.transfer.base import CHUNK, Progress, StoreAccessError, TransferError, check_sha, check_size, log, tmp_beside

SHA_KEY = "sha256"
"""The custom metadata key that holds an object's SHA-256 (the same name as on S3)."""


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

    def copy_within(
        self, src: str, dest: str, sha256: str | None, src_dir_fd: None = None, dest_dir_fd: None = None
    ) -> tuple[int, str | None]:
        """A copy by the filesystem (server-side where it can); the SHA-256 as given."""
        self.fs.copy(src, dest)
        return int(self.fs.size(dest)), sha256

    def put_bytes(self, path: str, data: bytes) -> None:
        """None: the store writes small objects through ``fs.open``."""
        return None

    def upload(self, local: Path, path: str, progress: Progress, dir_fd: None = None) -> tuple[int, str]:
        """Stream ``local`` to ``path``, then record its SHA-256 on the object."""
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
        check_size(f"upload of {local.name}", int(self.fs.size(path)), size)
        digest = h.hexdigest()
        self._record_sha(path, digest)
        return size, digest

    def _record_sha(self, path: str, digest: str) -> None:
        """Keep ``digest`` as the object's metadata ``sha256``. Set after the upload (like the
        tag of a multipart S3 object): the hash is known only once every byte went out."""
        setxattrs = getattr(self.fs, "setxattrs", None)
        if setxattrs is None:
            return  # a filesystem without metadata: downloads check the size only
        try:
            setxattrs(path, **{SHA_KEY: digest})
        except Exception as exc:  # noqa: BLE001 - optional, like S3's tag
            log.warning("cannot record the SHA-256 of %s (downloads will check its size only): %s", path, exc)
        self.fs.invalidate_cache(path)

    def download(self, path: str, dest: Path, progress: Progress, size_hint: int | None = None, dir_fd: None = None) -> tuple[int, str]:
        """Stream ``path`` to ``dest`` (atomically); (size, sha256), both verified."""
        tmp = tmp_beside(dest)
        h = hashlib.sha256()
        size = 0
        try:
            with self.fs.open(path, "rb", block_size=CHUNK, cache_type="none") as src, open(tmp, "wb") as out:
                expected = getattr(src, "size", None)
                # The object's details (gcsfs fetched them to open it) hold its custom metadata.
                details = getattr(src, "details", None) or self.fs.info(path)
                expected_sha = (details.get("metadata") or {}).get(SHA_KEY)
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    progress(len(chunk))
            check_size(f"download of {path}", size, expected)
            check_sha(f"download of {path}", h.hexdigest(), expected_sha)
            os.replace(tmp, dest)
        except BaseException:
            progress(-size)
            raise
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        return size, h.hexdigest()
