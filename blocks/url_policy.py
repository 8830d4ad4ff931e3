"""Which URLs outside the job store a job may read, and which network addresses it may reach.

An operator names the URLs in an allow-list of patterns (`fnmatch`: `https://data.example.org/*`,
`*` for any URL). A pattern matches the URL rebuilt from its parts (scheme, host, port, path,
query), so user-info tricks (`https://good.org@evil.org/`) and fragments never pass for an
allowed host. Internal addresses (loopback, link-local, cloud metadata, private networks, ...) are
reachable only through a pattern that names the host literally: `*` opens the public internet,
not the worker's own network.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

FETCHED_SCHEMES = ("http", "https")
# Object stores read with the job store's credentials (`jobcloud.blocks.object_fetch`): a
# pattern names the bucket (`s3://public-data/*`); there is no host or port to check.
OBJECT_SCHEMES = ("s3", "gs")
WILDCARD_CHARS = set("*?[")
# Metadata services outside the ranges below (AWS's IPv6 one sits in fd00::/8, Alibaba's in
# 100.64/10; both are "internal" anyway): named so the reason says what they are.
METADATA_ADDRESSES = {"169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200"}


class UrlPolicyError(ValueError):
    """A URL the policy does not let a job read; the message says why."""


def split_patterns(text: str | None) -> list[str]:
    """A comma-separated setting as its patterns (blank ones dropped)."""
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def canonical(url: str) -> str:
    """``url`` rebuilt from its parts (lower-case scheme and host, default port dropped, no
    fragment); `UrlPolicyError` for one JobCloud does not fetch or that hides its host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlPolicyError(f"{url!r} is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme in OBJECT_SCHEMES:
        return _canonical_object(url, scheme, parts.netloc, parts.path)
    if scheme not in FETCHED_SCHEMES:
        readable = ", ".join(f"{s}://" for s in (*FETCHED_SCHEMES, *OBJECT_SCHEMES))
        raise UrlPolicyError(f"{url!r}: only {readable} URLs are read from outside the job store")
    if parts.username is not None or parts.password is not None:
        raise UrlPolicyError(f"{url!r}: user names or passwords in URLs are not accepted")
    host = (parts.hostname or "").lower()
    if not host:
        raise UrlPolicyError(f"{url!r} has no host")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        netloc += f":{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{parts.path or '/'}{query}"


def _canonical_object(url: str, scheme: str, bucket: str, path: str) -> str:
    """`s3://bucket/key` as matched: a plain bucket name and a key of plain names (no `.`,
    `..` or empty parts, which object stores keep literally but a pattern's author would read
    as a path)."""
    if not bucket or "@" in bucket or ":" in bucket:
        raise UrlPolicyError(f"{url!r}: name a bucket, as {scheme}://BUCKET/KEY")
    body = path[1:].rstrip("/")  # a folder's trailing '/' is fine; a leading '//' is not
    parts = body.split("/") if body else []
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise UrlPolicyError(f"{url!r}: the key must be a plain path of names (no '.', '..' or '//')")
    return f"{scheme}://{bucket.lower()}/{'/'.join(parts)}"


def is_object_url(url: str) -> bool:
    """Whether ``url`` names an object store (`s3://`, `gs://`) rather than an http(s) server."""
    return url.split("://", 1)[0].lower() in OBJECT_SCHEMES if "://" in url else False


def _pattern_host(pattern: str) -> str | None:
    """The host a pattern names literally (no wildcard in it), or None."""
    if "://" not in pattern:
        return None
    netloc = pattern.split("://", 1)[1].split("/", 1)[0]
    if WILDCARD_CHARS & set(netloc) or "@" in netloc:
        return None
    try:
        return urlsplit(f"http://{netloc}").hostname
    except ValueError:
        return None


def internal_reason(address: str) -> str | None:
    """Why ``address`` (an IP) is internal to the worker's network, or None for a public one."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if str(ip) in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for test, words in (
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_private, "a private-network address"),
        (ip.is_reserved, "a reserved address"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"), "a shared (carrier-grade NAT) address"),
    ):
        if test:
            return words
    return None


class UrlPolicy(BaseModel):
    """The allow-list a job's URL inputs are read under (made by the API from its settings,
    carried in the job's parameters, applied again on the worker at every hop)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    patterns: list[str] = Field(default_factory=list, description="fnmatch patterns of readable URLs; `*` for any.")
    max_bytes: int = Field(10 * 1024**3, gt=0, description="Largest input read from one URL.")
    setting: str = Field("JOBCLOUD_API_TES_INPUT_URLS", description="The setting that holds the patterns (named in refusals).")

    def check(self, url: str) -> str:
        """The canonical form of ``url`` if a pattern allows it; `UrlPolicyError` naming the
        setting otherwise."""
        flat = canonical(url)
        if not any(fnmatch.fnmatchcase(flat, p) for p in self.patterns):
            allowed = ", ".join(self.patterns) or "none"
            raise UrlPolicyError(f"{url!r} is not on the allow-list {self.setting} (allowed: {allowed})")
        return flat

    def may_reach_internal(self, url: str) -> bool:
        """Whether a pattern that allows ``url`` names its host literally: only then may the
        host resolve to an internal address."""
        flat = canonical(url)
        host = urlsplit(flat).hostname
        return any(fnmatch.fnmatchcase(flat, p) and _pattern_host(p) == host for p in self.patterns)
