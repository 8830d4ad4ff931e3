"""The job store: every input and output of every job, under one root, through fsspec.

Keys are relative POSIX paths (see `jobcloud.blocks.keys`). The root is a local folder, `file://`,
`s3://bucket/prefix` or `gs://bucket/prefix` (which one: `jobcloud.blocks.store.factory`). Files move
through a `jobcloud.blocks.transfer` implementation: streamed, hashed in the same pass, verified, retried, and visible
under their final name only when complete.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import shutil
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel

from jobcloud.blocks.errors import MissingKeyError, StorageError, UnsafeKeyError, UserError
from jobcloud.blocks.keys import check_key, check_unique_names, join_key
from jobcloud.blocks.store.incoming import IncomingFile
from jobcloud.blocks.store.presign import PresignedUrl, presign
from jobcloud.blocks.transfer.base import StoreAccessError, Transfer
from jobcloud.blocks.transfer.factory import transfer_for

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
    return stat.S_ISREG(mode)


# Every folder below a local store's root is opened by one name relative to its parent's
# descriptor, never through a link: O_NOFOLLOW alone guards only a path's last component,
# so `link/file` with `link -> /outside` would otherwise be served. Descriptors, not a
# check-then-open on paths, so a folder swapped for a link mid-way is refused too.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
# Linux says ENOTDIR for a link opened with O_DIRECTORY|O_NOFOLLOW, BSD/macOS ELOOP.
_NOT_A_FOLDER = (errno.ENOTDIR, errno.ELOOP)


def link_error(key: str, link: str) -> UnsafeKeyError:
    """The error for a key that passes through (or is) the symbolic link ``link``."""
    return UnsafeKeyError(key, f"{link!r} is a symbolic link inside the job store; links are never followed")


def _tree_files(top: int) -> list[tuple[str, int]]:
    """(relative path, size) of the regular files below the open folder ``top``, sorted.

    Walked through descriptors: links at any depth are skipped, never followed, also one
    that replaces a folder during the walk. At most one descriptor per level is open.
    """
    out: list[tuple[str, int]] = []

    def scan(fd: int, rel: str) -> list[str]:
        subfolders: list[str] = []
        with os.scandir(fd) as it:
            for entry in it:
                r = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_symlink():
                    continue
                if entry.is_dir(follow_symlinks=False):
                    subfolders.append(r)
                elif entry.is_file(follow_symlinks=False):
                    out.append((r, entry.stat(follow_symlinks=False).st_size))
        return subfolders

    # (descriptor, its relative path, subfolders still to visit); ``top`` stays the caller's.
    stack: list[tuple[int, str, list[str]]] = [(top, "", scan(top, ""))]
    try:
        while stack:
            fd, _, pending = stack[-1]
            if not pending:
                stack.pop()
                if fd != top:
                    os.close(fd)
                continue
            rel = pending.pop()
            try:
                child = os.open(rel.rsplit("/", 1)[-1], _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (*_NOT_A_FOLDER, errno.ENOENT):
                    continue  # became a link or vanished since the scan: not followed
                raise
            try:
                found = scan(child, rel)
            except BaseException:
                os.close(child)
                raise
            stack.append((child, rel, found))
    finally:
        for fd, _, _ in stack:
            if fd != top:
                os.close(fd)
    out.sort()
    return out


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
            raise UserError(f"cannot open the job store {url!r}: {exc}. For s3:// install jobcloud[s3], for gs:// jobcloud[gcs]") from None
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.is_local = isinstance(fs, LocalFileSystem)
        if self.is_local:
            Path(self.root).mkdir(parents=True, exist_ok=True)
        self.transfer: Transfer = transfer_for(fs, concurrency, rehash=rehash)

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
        """Whether ``key`` is a file or a folder. A local link is not there; a key through
        a local link raises `UnsafeKeyError`."""
        p = self.path(key)
        if self.is_local:
            st = self._lstat(check_key(key, allow_root=True))
            return st is not None and not stat.S_ISLNK(st.st_mode)
        return bool(self._call(self.fs.exists, p))

    def is_dir(self, key: str) -> bool:
        """Whether ``key`` is a folder (a local link never is)."""
        p = self.path(key)
        if self.is_local:
            st = self._lstat(check_key(key, allow_root=True))
            return st is not None and stat.S_ISDIR(st.st_mode)
        return bool(self._call(self.fs.isdir, p))

    def require(self, key: str) -> None:
        """Raise `MissingKeyError` unless ``key`` is a file or a folder in the store."""
        if not self.exists(key):
            self.check()
            raise MissingKeyError(key, self.url)

    def check(self) -> None:
        """Raise a clear error if the store cannot be used at all (bad credentials, no
        bucket, unreachable endpoint); a no-op for local folders."""
        self.transfer.check(self.root)

    def list(self, prefix: str = "", recursive: bool = False) -> list[StoreEntry]:
        """Entries directly under ``prefix`` (or every file below it with ``recursive``)."""
        prefix = check_key(prefix, allow_root=True)
        if prefix and not self.exists(prefix):
            raise MissingKeyError(prefix, self.url)
        if recursive or (prefix and not self.is_dir(prefix)):
            return [StoreEntry(k, s, "file") for k, s in self.files(prefix)]
        if self.is_local:
            return self._list_local(prefix)
        out: list[StoreEntry] = []
        for info in self._call(self.fs.ls, self.path(prefix), detail=True):
            base = posixpath.basename(info["name"].rstrip("/"))
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
            st = self._lstat(key)
            if st is None or stat.S_ISLNK(st.st_mode):
                raise MissingKeyError(key, self.url)
            if stat.S_ISREG(st.st_mode):
                return [(key, st.st_size)]
            if not stat.S_ISDIR(st.st_mode):
                return []  # fifos, sockets, devices: never served
            with self._folder(key) as fd:
                found = self._call(_tree_files, fd)
            return [(join_key(key, rel) if key else rel, size) for rel, size in found if ".part-" not in rel]
        p = self.path(key)
        if self._call(self.fs.isfile, p):
            return [(key, int(self._call(self.fs.size, p)))]
        found = self._call(self.fs.find, p, detail=True)
        if not found:
            self.check()
            raise MissingKeyError(key, self.url)
        return sorted((self._key_of(name), int(info.get("size") or 0)) for name, info in found.items() if info.get("type") != "directory")

    # -- transfers ----------------------------------------------------------------------
    def download(self, key: str, dest_dir: Path, progress: Progress = _noop) -> list[FileRecord]:
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

    def upload_file(self, local: Path, key: str, progress: Progress = _noop) -> FileRecord:
        """Upload the regular local file ``local`` to exactly ``key`` (not ``key/<its name>``)."""
        key = check_key(key)
        if local.is_symlink() or not local.is_file():
            raise UserError(f"local path {str(local)!r} is not a regular file")
        return self._upload_file(local, key, progress)

    def open_write(self, key: str, spool_dir: Path | None = None, size_hint: int | None = None) -> IncomingFile:
        """A file to write ``key`` from pieces (an HTTP upload): `IncomingFile.write`, then
        `commit` (the key appears whole) or `discard` (nothing appears, no folder either).
        Locally it is written in the deepest folder of the key's path that exists and renamed
        into place; elsewhere spooled in ``spool_dir`` (default: the temp folder) and uploaded
        on commit. ``size_hint``: the announced size, reserved on disk at once."""
        key = check_key(key)
        *folders, name = key.split("/")
        if not self.is_local:
            upload = lambda path: self._upload_file(path, key, _noop)  # noqa: E731
            return IncomingFile(key, None, name, upload=upload, spool_dir=spool_dir, size_hint=size_hint)
        fd, depth = self._call(self._deepest_folder, key, folders)
        try:
            if depth == len(folders):
                self._refuse_folder(key, name, fd)
            return self._call(IncomingFile, key, fd, name, place=self._place, size_hint=size_hint)
        except BaseException:
            os.close(fd)
            raise

    def presigned_url(self, key: str, method: Literal["GET", "PUT"], expires_in: int) -> PresignedUrl:
        """A URL that lets anyone holding it ``method`` the file ``key`` for ``expires_in``
        seconds (S3, GCS); `NoPresignedUrlsError` for a local store."""
        return presign(self, check_key(key), method, expires_in)

    def write_bytes(self, key: str, data: bytes) -> FileRecord:
        """Write a small object whole, atomically."""
        key = check_key(key)
        digest = None if self.is_local else self.transfer.put_bytes(self.path(key), data)
        if digest is not None:
            return FileRecord(key=key, size=len(data), sha256=digest)
        digest = hashlib.sha256(data).hexdigest()
        self._atomic_write(key, lambda fh: fh.write(data))
        return FileRecord(key=key, size=len(data), sha256=digest)

    def read_bytes(self, key: str) -> bytes:
        """The whole content of the file ``key`` (for small objects: manifests, cache entries)."""
        key = check_key(key)
        if self.is_local:
            with self._parent(key) as (dir_fd, name):
                fd = self._open_file(key, name, dir_fd)
                with open(fd, "rb") as fh:
                    return self._call(fh.read)
        p = self.path(key)
        try:
            with self.fs.open(p, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise MissingKeyError(key, self.url) from None

    def open_read(self, key: str) -> Any:
        """The file ``key`` opened for reading in binary (a file object to stream from, e.g.
        an HTTP download); the caller closes it. A local link is never opened."""
        key = check_key(key)
        if self.is_local:
            with self._parent(key) as (dir_fd, name):
                fd = self._open_file(key, name, dir_fd)
            os.set_blocking(fd, True)  # opened non-blocking only so a fifo cannot hang the open
            return open(fd, "rb")
        try:
            if not self._call(self.fs.isfile, self.path(key)):
                raise MissingKeyError(key, self.url)
            return self._call(self.fs.open, self.path(key), "rb")
        except FileNotFoundError:
            raise MissingKeyError(key, self.url) from None

    def copy(self, src: str, dest: str, size: int | None = None, sha256: str | None = None) -> FileRecord:
        """Copy one file inside the store (server-side on object stores); the size is
        checked against ``size`` and the record keeps the known ``sha256``."""
        src, dest = check_key(src), check_key(dest)
        if self.is_local:
            with self._parent(src) as (src_fd, src_name), self._parent(dest, create=True) as (dest_fd, dest_name):
                fd = self._open_file(src, src_name, src_fd)  # refuses a link, says "missing"
                os.close(fd)
                self._refuse_folder(dest, dest_name, dest_fd)
                got, digest = self._call(self.transfer.copy_within, src_name, dest_name, sha256, src_dir_fd=src_fd, dest_dir_fd=dest_fd)
            return self._copied(src, dest, got, digest, size)
        try:
            got, digest = self._call(self.transfer.copy_within, self.path(src), self.path(dest), sha256)
        except FileNotFoundError:
            raise MissingKeyError(src, self.url) from None
        return self._copied(src, dest, got, digest, size)

    def _copied(self, src: str, dest: str, got: int, digest: str | None, size: int | None) -> FileRecord:
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
            if self.is_local:
                # rmtree with dir_fd walks by descriptors too: links inside are removed, not followed.
                with self._parent(key) as (dir_fd, name):
                    self._call(shutil.rmtree, name, dir_fd=dir_fd)
                return n
            self._call(self.fs.rm, self.path(key), recursive=True)
            return n
        if self.is_local:
            with self._parent(key) as (dir_fd, name):
                self._call(os.unlink, name, dir_fd=dir_fd)
            return 1
        self._call(self.fs.rm, self.path(key))
        return 1

    # -- internals ----------------------------------------------------------------------
    def _parallel(self, fn: Callable[[Any], FileRecord], items: Iterable[Any]) -> list[FileRecord]:
        items = list(items)
        if len(items) <= 1 or self.concurrency <= 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(fn, items))

    def _download_file(self, key: str, dest: Path, progress: Progress, size_hint: int | None = None) -> FileRecord:
        if self.is_local:
            with self._parent(key) as (dir_fd, name):
                fd = self._open_file(key, name, dir_fd)  # a clear error for a link or a gap
                os.close(fd)
                size, digest = self._call(self.transfer.download, name, dest, progress, size_hint, dir_fd=dir_fd)
            return FileRecord(key=key, size=size, sha256=digest)
        try:
            size, digest = self._call(self.transfer.download, self.path(key), dest, progress, size_hint)
        except FileNotFoundError:
            raise MissingKeyError(key, self.url) from None
        return FileRecord(key=key, size=size, sha256=digest)

    def _upload_file(self, local: Path, key: str, progress: Progress) -> FileRecord:
        if self.is_local:
            with self._parent(key, create=True) as (dir_fd, name):
                self._refuse_folder(key, name, dir_fd)
                size, digest = self._call(self.transfer.upload, local, name, progress, dir_fd=dir_fd)
            return FileRecord(key=key, size=size, sha256=digest)
        size, digest = self._call(self.transfer.upload, local, self.path(key), progress)
        return FileRecord(key=key, size=size, sha256=digest)

    def _atomic_write(self, key: str, write: Callable[[Any], Any]) -> None:
        path = self.path(key)
        if self.is_local:
            # A local reader must never see a half-written file: write beside, then rename.
            with self._parent(key, create=True) as (dir_fd, name):
                self._refuse_folder(key, name, dir_fd)
                tmp = f".{name}.part-{uuid.uuid4().hex[:8]}"
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                try:
                    with open(os.open(tmp, flags, 0o644, dir_fd=dir_fd), "wb") as fh:
                        write(fh)
                    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                finally:
                    try:
                        os.unlink(tmp, dir_fd=dir_fd)
                    except FileNotFoundError:
                        pass  # renamed into place: nothing left beside
            return
        # Object stores publish an object only when its (multipart) upload completes.
        with self._call(self.fs.open, path, "wb") as fh:
            write(fh)

    # -- local store: every name below the root opened without following links ----------
    def _open_folder(self, key: str, parts: Sequence[str], create: bool) -> int:
        """A descriptor of the folder ``root/parts...``, each name opened relative to the
        previous folder with O_NOFOLLOW. Only names below the root count: the root itself
        may be a link (/tmp -> /private/tmp). ``create`` makes missing folders."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for i, part in enumerate(parts):
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise MissingKeyError(key, self.url) from None
                    try:
                        os.mkdir(part, dir_fd=fd)
                    except FileExistsError:
                        pass  # another upload made it meanwhile
                    try:
                        nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    except OSError as exc:
                        raise self._not_a_folder(exc, key, parts[: i + 1], fd, create) from None
                except OSError as exc:
                    raise self._not_a_folder(exc, key, parts[: i + 1], fd, create) from None
                os.close(fd)
                fd = nxt
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _not_a_folder(self, exc: OSError, key: str, parts: Sequence[str], dir_fd: int, create: bool) -> Exception:
        """The error for ``parts[-1]`` (inside ``dir_fd``) that could not be opened as a folder."""
        if exc.errno not in _NOT_A_FOLDER:
            return exc
        try:
            mode = os.lstat(parts[-1], dir_fd=dir_fd).st_mode
        except FileNotFoundError:
            return MissingKeyError(key, self.url)
        if stat.S_ISLNK(mode):
            return link_error(key, "/".join(parts))
        if create:
            return UserError(f"cannot write {key!r}: {'/'.join(parts)!r} is a file, not a folder")
        return MissingKeyError(key, self.url)

    def _deepest_folder(self, key: str, parts: Sequence[str]) -> tuple[int, int]:
        """(descriptor, depth) of the deepest folder of ``root/parts...`` that exists, opened
        like `_open_folder` (a link or a file on the way is refused)."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for i, part in enumerate(parts):
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    return fd, i
                except OSError as exc:
                    raise self._not_a_folder(exc, key, parts[: i + 1], fd, True) from None
                os.close(fd)
                fd = nxt
            return fd, len(parts)
        except BaseException:
            os.close(fd)
            raise

    def _place(self, key: str, src_dir_fd: int, src_name: str) -> None:
        """Rename the finished file ``src_name`` (in the store folder ``src_dir_fd``) to ``key``,
        making the key's folders first; durable once this returns."""
        with self._parent(key, create=True) as (dir_fd, name):
            self._refuse_folder(key, name, dir_fd)
            self._call(os.replace, src_name, name, src_dir_fd=src_dir_fd, dst_dir_fd=dir_fd)
            self._call(os.fsync, dir_fd)

    @contextmanager
    def _parent(self, key: str, create: bool = False) -> Iterator[tuple[int, str]]:
        """(descriptor of the folder holding ``key``, last name of ``key``); see `_open_folder`."""
        *folders, name = key.split("/")
        fd = self._call(self._open_folder, key, folders, create)
        try:
            yield fd, name
        finally:
            os.close(fd)

    @contextmanager
    def _folder(self, key: str) -> Iterator[int]:
        """A descriptor of the folder ``key`` ('' for the root); see `_open_folder`."""
        fd = self._call(self._open_folder, key, key.split("/") if key else [], False)
        try:
            yield fd
        finally:
            os.close(fd)

    def _lstat(self, key: str) -> os.stat_result | None:
        """The local entry ``key`` itself (a link is returned, not followed); None if absent."""
        if not key:
            return os.stat(self.root)
        try:
            with self._parent(key) as (dir_fd, name):
                return os.lstat(name, dir_fd=dir_fd)
        except (MissingKeyError, FileNotFoundError):
            return None

    def _open_file(self, key: str, name: str, dir_fd: int) -> int:
        """Open the regular file ``name`` in ``dir_fd`` for reading; a link is never opened."""
        try:
            # O_NONBLOCK: a fifo planted in the store must not hang the reader.
            fd = os.open(name, _FILE_FLAGS | os.O_NONBLOCK, dir_fd=dir_fd)
        except FileNotFoundError:
            raise MissingKeyError(key, self.url) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise link_error(key, key) from None
            raise StorageError(f"the job store {self.url} failed: {exc}") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UserError(f"{key!r} is not a file in the job store {self.url}")
        return fd

    def _refuse_folder(self, key: str, name: str, dir_fd: int) -> None:
        try:
            mode = os.lstat(name, dir_fd=dir_fd).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISDIR(mode):
            raise UserError(f"cannot write file {key!r}: a folder of that name exists")

    def _list_local(self, prefix: str) -> list[StoreEntry]:
        out: list[StoreEntry] = []
        with self._folder(prefix) as fd, os.scandir(fd) as it:
            for entry in it:
                if entry.is_symlink() or (entry.name.startswith(".") and ".part-" in entry.name):
                    continue
                key = f"{prefix}/{entry.name}" if prefix else entry.name
                if entry.is_dir(follow_symlinks=False):
                    out.append(StoreEntry(key, 0, "directory"))
                elif entry.is_file(follow_symlinks=False):
                    out.append(StoreEntry(key, entry.stat(follow_symlinks=False).st_size, "file"))
        return sorted(out, key=lambda e: e.key)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (FileNotFoundError, StorageError, UserError):
            raise
        except PermissionError as exc:
            if self.is_local:
                raise StorageError(f"the job store {self.url} refused access: {exc}") from exc
            raise StoreAccessError(f"the job store {self.url} refused access ({exc}); check its credentials") from exc
        except OSError as exc:
            raise StorageError(f"the job store {self.url} failed: {exc}") from exc
