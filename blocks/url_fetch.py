"""Read one http(s) URL into a file under a `UrlPolicy`: every hop (redirects included) on the
allow-list, every connection to an address the policy lets it reach, at most `max_bytes`.

The address is checked where the connection is made (a network backend that resolves the host,
checks each address and connects to a checked one), not by resolving once beforehand: a name
that resolves to a public address for the check and to 127.0.0.1 for the connection (DNS
rebinding) never reaches the internal one. TLS still verifies the certificate of the host the
URL names.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpcore

from jobcloud.blocks.url_policy import UrlPolicy, UrlPolicyError, internal_reason

MAX_REDIRECTS = 5
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Fetched:
    """What one URL gave: its size and SHA-256 (for the job's manifest)."""

    size: int
    sha256: str


class UrlFetchError(Exception):
    """The URL could not be read (refused by the policy, an HTTP error, too big, the network)."""


class _CheckedBackend(httpcore.SyncBackend):
    """Connects only to addresses ``allow_internal`` or the public internet allows."""

    def __init__(self, url: str, allow_internal: bool) -> None:
        self.url, self.allow_internal = url, allow_internal

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise UrlFetchError(f"{self.url!r}: cannot resolve {host!r} ({exc})") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not self.allow_internal:
            for address in addresses:
                why = internal_reason(address)
                if why:
                    raise UrlFetchError(
                        f"{self.url!r}: {host} resolves to {address}, {why}; only an allow-list pattern that names "
                        "the host literally lets a job reach it"
                    )
        last: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                last = exc
        raise UrlFetchError(f"{self.url!r}: cannot connect to {host}:{port} ({last})")


def fetch_url(url: str, target: Path, policy: UrlPolicy, timeout_s: float = 60) -> Fetched:
    """Write what ``url`` answers to ``target``; its size and digest. `UrlFetchError` saying why
    when the policy refuses a hop, the server answers an error, or the body is too big."""
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        try:
            flat = policy.check(current)
        except UrlPolicyError as exc:
            raise UrlFetchError(str(exc) if current == url else f"{url!r} redirects to {exc}") from None
        backend = _CheckedBackend(current, policy.may_reach_internal(current))
        with httpcore.ConnectionPool(network_backend=backend, retries=0) as pool:
            try:
                location = _get(pool, flat, target, policy.max_bytes, timeout_s)
            except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
                raise UrlFetchError(f"{current!r}: {type(exc).__name__} {exc}") from None
        if isinstance(location, Fetched):
            return location
        current = urljoin(current, location)
    raise UrlFetchError(f"{url!r}: more than {MAX_REDIRECTS} redirects")


def _get(pool: httpcore.ConnectionPool, url: str, target: Path, max_bytes: int, timeout_s: float) -> Fetched | str:
    """One GET: the body written to ``target``, or the Location of a redirect."""
    timeouts = {"connect": min(10.0, timeout_s), "read": timeout_s, "write": timeout_s, "pool": timeout_s}
    with pool.stream("GET", url, headers={"User-Agent": "JobCloud-TES"}, extensions={"timeout": timeouts}) as response:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
        if response.status in (301, 302, 303, 307, 308) and "location" in headers:
            return headers["location"]
        if response.status != 200:
            raise UrlFetchError(f"{url!r}: the server answered HTTP {response.status}")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise UrlFetchError(f"{url!r}: {declared} bytes, more than the {max_bytes} an input URL may have")
        # Counted as it comes: a server that sends more than it declared, or no length at all.
        return write_limited(response.iter_stream(), target, max_bytes, url)


def write_limited(chunks: Iterable[bytes], target: Path, max_bytes: int, url: str) -> Fetched:
    """Write ``chunks`` to ``target``, hashing; past ``max_bytes`` the file is removed and
    `UrlFetchError` says so."""
    size, digest = 0, hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                out.close()
                target.unlink(missing_ok=True)
                raise UrlFetchError(f"{url!r}: more than the {max_bytes} bytes an input URL may have")
            out.write(chunk)
            digest.update(chunk)
    return Fetched(size, digest.hexdigest())
