"""Job-store keys: relative POSIX paths that can never leave the store's root."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from urllib.parse import unquote

from jobcloud.blocks.errors import UnsafeKeyError, UserError

MAX_SEGMENT_BYTES = 255
MAX_KEY_BYTES = 4096
# Unicode category Cc is exactly these ranges; a regex scans a key far faster than a loop.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_key(key: str, *, allow_root: bool = False) -> str:
    """Return ``key`` in canonical form (no trailing slash) or raise `UnsafeKeyError`.

    A key is a relative POSIX path of non-empty segments. `..`, `.`, absolute paths,
    backslashes, NUL and other control characters, percent-encoded separators or dots,
    and segments over 255 bytes are refused. ``allow_root`` accepts the empty key
    (the whole store) for listings.
    """
    if not isinstance(key, str):
        raise UnsafeKeyError(str(key), "a key must be a string")
    if key.endswith("/") and not key.endswith("//"):
        key = key[:-1]
    if key in ("", "."):
        if allow_root:
            return ""
        raise UnsafeKeyError(key, "the key is empty")
    if "\x00" in key:
        raise UnsafeKeyError(key, "it contains a NUL character")
    if _CONTROL.search(key):
        raise UnsafeKeyError(key, "it contains a control character")
    if "\\" in key:
        raise UnsafeKeyError(key, "it contains a backslash")
    if key.startswith("/") or key.startswith("~"):
        raise UnsafeKeyError(key, "it is absolute; give a path relative to the store")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise UnsafeKeyError(key[:40] + "...", f"it is longer than {MAX_KEY_BYTES} bytes")
    # Another layer (a URL, a proxy, a shell) may decode %2e%2e or %2f: refuse what would
    # decode into something we would refuse.
    decoded = unquote(unquote(key)) if "%" in key else key
    if decoded != key:
        if decoded.count("/") != key.count("/") or "\\" in decoded or "\x00" in decoded:
            raise UnsafeKeyError(key, "it contains a percent-encoded separator")
        if any(seg in ("..", ".") for seg in decoded.split("/")):
            raise UnsafeKeyError(key, "it contains a percent-encoded '..'")
    if ":" in key.split("/")[0] and "://" in key:
        raise UnsafeKeyError(key, "it looks like a URL; give a key inside the store")
    for seg in key.split("/"):
        if seg == "":
            raise UnsafeKeyError(key, "it has an empty segment ('//')")
        if seg in ("..", "."):
            raise UnsafeKeyError(key, f"it contains a '{seg}' segment")
        if len(seg.encode()) > MAX_SEGMENT_BYTES:
            raise UnsafeKeyError(key, f"a name is longer than {MAX_SEGMENT_BYTES} bytes")
    return key


def last_name(key: str) -> str:
    """The last segment of a key: the name it keeps when staged."""
    return check_key(key).rsplit("/", 1)[-1]


def join_key(*parts: str) -> str:
    """Join key parts with '/', checking the result."""
    return check_key("/".join(p.strip("/") for p in parts if p.strip("/")))


def check_unique_names(names: Iterable[str], where: str = "") -> None:
    """Refuse two paths that differ only in Unicode normalization (NFC vs NFD...).

    They are distinct on Linux but the same file on macOS and some object-store clients,
    so one would silently replace the other.
    """
    seen: dict[str, str] = {}
    for name in names:
        norm = unicodedata.normalize("NFC", name)
        other = seen.setdefault(norm, name)
        if other != name:
            place = f" in {where}" if where else ""
            raise UserError(
                f"{other!r} and {name!r}{place} differ only in Unicode normalization "
                "(the same name written with composed and decomposed characters); rename one"
            )
