"""The job store: every input and output of every job, under one root, through fsspec.

Keys are relative POSIX paths (see `flows.keys`). The root is a local folder, `file://`,
`s3://bucket/prefix` or `gs://bucket/prefix` (settings: `blocks.store_block`). Files move
through `blocks.transfer`: streamed, hashed in the same pass, verified, retried, and visible
under their final name only when complete.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel

from blocks.transfer import StoreAccessError, transfer_for
from flows.errors import MissingKeyError, StorageError, UserError
from flows.keys import check_key, check_unique_names, join_key

DEFAULT_CONCURRENCY = 8

Progress = Callable[[int], None]
"""Called with the number of bytes just transferred."""


class FileRecord(BaseModel):
    """One transferred file: where it is, how big, its SHA-256."""

    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class StoreEntry:
    """One line of a listing."""

    key: str
    size: int
    type: Literal["file", "directory"]


@dataclass(frozen=True)
class LocalFile:
    """A regular file on this machine and the relative path it keeps."""

    path: Path
    relpath: str
    size: int


def _noop(_: int) -> None:
    return None


def local_files(root: Path, skipped: list[str] | None = None) -> list[LocalFile]:
    """Regular files under ``root`` (or ``root`` itself), never following symlinks.

    Symlinks and special files are not returned; their relative paths go to ``skipped``.
    """
    if root.is_symlink():
        if skipped is not None:
            skipped.append(root.name)
        return []
    if root.is_file():
        return [LocalFile(root, root.name, root.stat().st_size)]
    out: list[LocalFile] = []
    # scandir's d_type says link / file / folder without a stat per entry; strings, not
    # Paths, until the end: this walk runs over ten thousand files.
    stack = [(str(root), "")]
    while stack:
        folder, rel_folder = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                rel = f"{rel_folder}/{entry.name}" if rel_folder else entry.name
                if entry.is_symlink():
                    if skipped is not None:
                        skipped.append(rel)
                elif entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, rel))
                elif entry.is_file(follow_symlinks=False):
                    out.append(LocalFile(Path(entry.path), rel, entry.stat(follow_symlinks=False).st_size))
                elif skipped is not None:
                    skipped.append(rel)  # fifos, sockets, devices
    out.sort(key=lambda f: f.relpath)
    if skipped is not None:
        skipped.sort()
    return out


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


class JobStore:
    """A job store rooted at ``url``; every method takes keys, never raw paths."""

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        rehash: bool = False,
    ) -> None:
        """Open the store at ``url``.

        ``storage_options`` go to fsspec (s3fs: key, secret, endpoint_url, client_kwargs...);
        ``concurrency`` bounds the files moved at once; ``rehash`` makes local staging hash
        every file again instead of trusting the SHA-256 recorded when it entered the store.
        """
        self.url = url
        self.concurrency = concurrency
        try:
            fs, root = fsspec.url_to_fs(url, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise UserError(
                f"cannot open the job store {url!r}: {exc}. For s3:// install jobcloud[s3], "
                "for gs:// jobcloud[gcs]"
            ) from None
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.is_local = isinstance(fs, LocalFileSystem)
        if self.is_local:
            Path(self.root).mkdir(parents=True, exist_ok=True)
        self.transfer = transfer_for(fs, concurrency, rehash=rehash)

    @classmethod
    def from_settings(cls) -> "JobStore":
        """The store that `JOBCLOUD_STORAGE` names: a URL, or `block:<name>` for a saved
        `JobStoreBlock` (default: a folder under ~/.jobcloud). S3 credentials and endpoint
        come from the block, else from the standard AWS_* variables."""
        from blocks.settings import get_settings

        value = get_settings().storage_url
        if value.startswith("block:"):
            from blocks.store_block import store_from_setting

            return store_from_setting(value)
        from blocks.store_urls import store_from_url

        return store_from_url(value)

    def __repr__(self) -> str:
        return f"JobStore({self.url!r})"

    # -- addressing ---------------------------------------------------------------------
    def path(self, key: str) -> str:
        """The backend path of a (checked) key."""
        key = check_key(key, allow_root=True)
        return f"{self.root}/{key}" if key else self.root

    def _key_of(self, path: str) -> str:
        path = path.rstrip("/")
        rel = posixpath.relpath(path, self.root) if self.is_local else path[len(self.root) + 1 :]
        return rel

    # -- queries ------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        p = self.path(key)
        if self.is_local:
            return os.path.lexists(p) and not os.path.islink(p)
        return bool(self._call(self.fs.exists, p))

    def is_dir(self, key: str) -> bool:
        p = self.path(key)
        if self.is_local:
            return os.path.isdir(p) and not os.path.islink(p)
        return bool(self._call(self.fs.isdir, p))

    def require(self, key: str) -> None:
        """Raise `MissingKeyError` unless ``key`` is a file or a folder in the store."""
        if not self.exists(key):
            self.check()
            raise MissingKeyError(key, self.url)

    def check(self) -> None:
        """Raise a clear error if the store cannot be used at all (bad credentials, no
        bucket, unreachable endpoint); a no-op for local folders."""
        check = getattr(self.transfer, "check", None)
        if check is not None:
            check(self.root)

    def list(self, prefix: str = "", recursive: bool = False) -> list[StoreEntry]:
        """Entries directly under ``prefix`` (or every file below it with ``recursive``)."""
        prefix = check_key(prefix, allow_root=True)
        if prefix and not self.exists(prefix):
            raise MissingKeyError(prefix, self.url)
        if recursive or (prefix and not self.is_dir(prefix)):
            return [StoreEntry(k, s, "file") for k, s in self.files(prefix)]
        out: list[StoreEntry] = []
        for info in self._call(self.fs.ls, self.path(prefix), detail=True):
            name = info["name"]
            if self.is_local and os.path.islink(name):
                continue
            base = posixpath.basename(name.rstrip("/"))
            if base.startswith(".") and ".part-" in base:
                continue
            kind = "directory" if info["type"] == "directory" else "file"
            key = f"{prefix}/{base}" if prefix else base
            out.append(StoreEntry(key, int(info.get("size") or 0), kind))
        return sorted(out, key=lambda e: e.key)

    def files(self, key: str) -> list[tuple[str, int]]:
        """(key, size) of every file at or below ``key``, without following links."""
        key = check_key(key, allow_root=True)
        if self.is_local:
            base = Path(self.path(key))
            if not os.path.lexists(base):
                raise MissingKeyError(key, self.url)
            if base.is_file() and not base.is_symlink():
                return [(key, base.stat().st_size)]
            return [
                (join_key(key, f.relpath) if key else f.relpath, f.size)
                for f in local_files(base)
                if ".part-" not in f.relpath
            ]
        p = self.path(key)
        if self._call(self.fs.isfile, p):
            return [(key, int(self._call(self.fs.size, p)))]
        found = self._call(self.fs.find, p, detail=True)
        if not found:
            self.check()
            raise MissingKeyError(key, self.url)
        return sorted(
            (self._key_of(name), int(info.get("size") or 0))
            for name, info in found.items()
            if info.get("type") != "directory"
        )

    # -- transfers ----------------------------------------------------------------------
    def download(
        self, key: str, dest_dir: Path, progress: Progress = _noop
    ) -> list[FileRecord]:
        """Copy ``key`` (a file or a folder) to ``dest_dir/<last name of key>``."""
        key = check_key(key)
        entries = self.files(key)
        # Keys written by other tools are checked like ours before they name a local file.
        for k, _ in entries:
            check_key(k)
        check_unique_names((k for k, _ in entries), where=key)
        name = key.rsplit("/", 1)[-1]
        single = len(entries) == 1 and entries[0][0] == key
        made: set[Path] = set()

        def one(item: tuple[str, int]) -> FileRecord:
            k, size = item
            rel = name if single else posixpath.join(name, k[len(key) + 1 :])
            dest = dest_dir / rel
            if dest.parent not in made:
                dest.parent.mkdir(parents=True, exist_ok=True)
                made.add(dest.parent)
            return self._download_file(k, dest, progress, size)

        return self._parallel(one, entries)

    def upload_tree(
        self,
        local: Path,
        prefix: str,
        progress: Progress = _noop,
        skipped: list[str] | None = None,
        keep_name: bool = False,
    ) -> list[FileRecord]:
        """Upload the regular files under ``local`` to ``prefix/...``; links are skipped.

        With ``keep_name`` a folder lands at ``prefix/<its name>/...`` (like `cp -r`).
        """
        prefix = check_key(prefix, allow_root=True)
        files = local_files(local, skipped)
        check_unique_names((f.relpath for f in files), where=str(local))
        if local.is_dir() and keep_name:
            prefix = join_key(prefix, local.name) if prefix else check_key(local.name)

        def one(f: LocalFile) -> FileRecord:
            key = join_key(prefix, f.relpath) if prefix else check_key(f.relpath)
            return self._upload_file(f.path, key, progress)

        return self._parallel(one, files)

    def write_bytes(self, key: str, data: bytes) -> FileRecord:
        """Write a small object whole, atomically."""
        key = check_key(key)
        put_bytes = getattr(self.transfer, "put_bytes", None)
        if put_bytes is not None:
            digest = put_bytes(self.path(key), data)
            return FileRecord(key=key, size=len(data), sha256=digest)
        digest = hashlib.sha256(data).hexdigest()
        self._atomic_write(key, lambda fh: fh.write(data))
        return FileRecord(key=key, size=len(data), sha256=digest)

    def read_bytes(self, key: str) -> bytes:
        key = check_key(key)
        p = self.path(key)
        try:
            with self.fs.open(p, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise MissingKeyError(key, self.url) from None

    def copy(self, src: str, dest: str, size: int | None = None, sha256: str | None = None) -> FileRecord:
        """Copy one file inside the store (server-side on object stores); the size is
        checked against ``size`` and the record keeps the known ``sha256``."""
        src, dest = check_key(src), check_key(dest)
        if self.is_local:
            os.makedirs(os.path.dirname(self.path(dest)), exist_ok=True)
        copy = getattr(self.transfer, "copy_within", None)
        try:
            if copy is not None:
                got, digest = self._call(copy, self.path(src), self.path(dest), sha256)
            else:
                self._call(self.fs.copy, self.path(src), self.path(dest))
                got, digest = int(self._call(self.fs.size, self.path(dest))), sha256
        except FileNotFoundError:
            raise MissingKeyError(src, self.url) from None
        if size is not None and got != size:
            raise StorageError(f"copy of {src!r} to {dest!r}: {got} bytes, expected {size}")
        if digest is None:
            digest = hashlib.sha256(self.read_bytes(dest)).hexdigest()
        return FileRecord(key=dest, size=got, sha256=digest)

    def remove(self, key: str, recursive: bool = False) -> int:
        """Delete ``key``; a folder needs ``recursive``. Returns the number of files removed."""
        key = check_key(key)
        self.require(key)
        if self.is_dir(key):
            if not recursive:
                raise UserError(f"{key!r} is a folder; pass -r to remove it and all it holds")
            n = len(self.files(key))
            self._call(self.fs.rm, self.path(key), recursive=True)
            return n
        self._call(self.fs.rm, self.path(key))
        return 1

    # -- internals ----------------------------------------------------------------------
    def _parallel(self, fn: Callable[[Any], FileRecord], items: Iterable[Any]) -> list[FileRecord]:
        items = list(items)
        if len(items) <= 1 or self.concurrency <= 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(fn, items))

    def _download_file(
        self, key: str, dest: Path, progress: Progress, size_hint: int | None = None
    ) -> FileRecord:
        try:
            size, digest = self._call(self.transfer.download, self.path(key), dest, progress, size_hint)
        except FileNotFoundError:
            raise MissingKeyError(key, self.url) from None
        return FileRecord(key=key, size=size, sha256=digest)

    def _upload_file(self, local: Path, key: str, progress: Progress) -> FileRecord:
        path = self.path(key)
        if self.is_local:
            parent = os.path.dirname(path)
            if not os.path.isdir(parent):
                os.makedirs(parent, exist_ok=True)
            if os.path.isdir(path) and not os.path.islink(path):
                raise UserError(f"cannot write file {key!r}: a folder of that name exists")
        size, digest = self._call(self.transfer.upload, local, path, progress)
        return FileRecord(key=key, size=size, sha256=digest)

    def _atomic_write(self, key: str, write: Callable[[Any], Any]) -> None:
        path = self.path(key)
        if self.is_local:
            # A local reader must never see a half-written file: write beside, then rename.
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if os.path.isdir(path) and not os.path.islink(path):
                raise UserError(f"cannot write file {key!r}: a folder of that name exists")
            tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.part-{uuid.uuid4().hex[:8]}"
            try:
                with open(tmp, "wb") as fh:
                    write(fh)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            return
        # Object stores publish an object only when its (multipart) upload completes.
        with self._call(self.fs.open, path, "wb") as fh:
            write(fh)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (FileNotFoundError, StorageError, UserError):
            raise
        except PermissionError as exc:
            if self.is_local:
                raise StorageError(f"the job store {self.url} refused access: {exc}") from exc
            raise StoreAccessError(
                f"the job store {self.url} refused access ({exc}); check its credentials"
            ) from exc
        except OSError as exc:
            raise StorageError(f"the job store {self.url} failed: {exc}") from exc
