"""Transfers through any fsspec filesystem (gcsfs...): chunked streams through ``fs.open``;
the backend's own multipart/resumable upload publishes the object at close."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from jobcloud.blocks.transfer.base import CHUNK, Progress, StoreAccessError, TransferError, check_size, retrying, tmp_beside


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
        check_size(f"upload of {local.name}", int(self.fs.size(path)), size)
        return size, h.hexdigest()

    def download(self, path: str, dest: Path, progress: Progress, size_hint: int | None = None, dir_fd: None = None) -> tuple[int, str]:
        return retrying(f"download of {path}", lambda: self._download_once(path, dest, progress))

    def _download_once(self, path: str, dest: Path, progress: Progress) -> tuple[int, str]:
        tmp = tmp_beside(dest)
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
            check_size(f"download of {path}", size, expected)
            os.replace(tmp, dest)
        except BaseException:
            progress(-size)
            raise
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        return size, h.hexdigest()
