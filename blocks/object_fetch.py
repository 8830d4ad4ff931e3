"""Read an object or a folder of objects from an object store outside the job store (another
bucket, `s3://` or `gs://`) into the work folder, under a `UrlPolicy` and its size limit.

The objects are read with the job store's own connection settings (endpoint, credentials) when
the URL has the job store's scheme, otherwise with the filesystem's default credentials. A
bucket those credentials cannot read, a missing key or a folder over the limit is an
`ObjectFetchError` saying which.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import fsspec

from jobcloud.blocks.errors import UnsafeKeyError
from jobcloud.blocks.keys import check_key
from jobcloud.blocks.url_fetch import Fetched, UrlFetchError, write_limited
from jobcloud.blocks.url_policy import UrlPolicy, UrlPolicyError

CHUNK = 4 * 1024 * 1024


class ObjectFetchError(Exception):
    """The object(s) could not be read: refused by the policy, missing, forbidden, too big."""


def fetch_object(
    url: str, target: Path, kind: Literal["FILE", "DIRECTORY"], policy: UrlPolicy, storage_options: dict[str, Any] | None = None
) -> list[tuple[str, Fetched]]:
    """Copy the object ``url`` to ``target`` (FILE), or every object under it into the folder
    ``target`` (DIRECTORY); each file's name relative to ``target`` ('' for a FILE), size and
    SHA-256."""
    try:
        flat = policy.check(url)
    except UrlPolicyError as exc:
        raise ObjectFetchError(str(exc)) from None
    try:
        fs, path = fsspec.url_to_fs(flat, **(storage_options or {}))
        if kind == "FILE":
            size = int(fs.info(path).get("size") or 0)
            _check_size(url, size, policy.max_bytes)
            return [("", _copy(fs, path, target, url, policy.max_bytes))]
        return _copy_folder(fs, path, target, url, policy.max_bytes)
    except ObjectFetchError:
        raise
    except FileNotFoundError:
        raise ObjectFetchError(f"{url!r}: no such {'object' if kind == 'FILE' else 'folder'}") from None
    except PermissionError as exc:
        raise ObjectFetchError(f"{url!r}: the job store's credentials may not read it ({exc})") from None
    except (OSError, ValueError, ImportError) as exc:
        raise ObjectFetchError(f"{url!r}: {type(exc).__name__}: {exc}") from None


def _check_size(url: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise ObjectFetchError(f"{url!r}: {size} bytes, more than the {max_bytes} an input URL may have")


def _copy(fs: Any, path: str, target: Path, url: str, max_bytes: int) -> Fetched:
    """Stream one object to ``target``, counting: an object that grew past the limit since
    it was listed is stopped too."""
    with fs.open(path, "rb") as src:
        try:
            return write_limited(iter(lambda: src.read(CHUNK), b""), target, max_bytes, url)
        except UrlFetchError as exc:
            raise ObjectFetchError(str(exc)) from None


def _copy_folder(fs: Any, path: str, target: Path, url: str, max_bytes: int) -> list[tuple[str, Fetched]]:
    """Every object under ``path`` into ``target`` at its relative name; the limit counts
    the folder's total."""
    listed = fs.find(path.rstrip("/") + "/", detail=True)
    if not listed:
        raise FileNotFoundError(path)
    start = path.rstrip("/") + "/"
    files = []
    for name, info in sorted(listed.items()):
        if info.get("type") == "directory" or name.endswith("/"):
            continue
        rel = name[len(start) :] if name.startswith(start) else name.rsplit("/", 1)[-1]
        try:
            check_key(rel)
        except UnsafeKeyError:
            raise ObjectFetchError(f"{url!r}: the object {name!r} has a name a file cannot have") from None
        files.append((rel, name, int(info.get("size") or 0)))
    _check_size(url, sum(size for *_, size in files), max_bytes)
    target.mkdir(parents=True, exist_ok=True)
    return [(rel, _copy(fs, name, target / rel, url, max_bytes)) for rel, name, _ in files]
