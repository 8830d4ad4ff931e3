"""Bearer-token authentication from an API-key list (and OIDC JWTs, `oidc.py`), and the per-user
rate limit.

The keys are JSON `{"<token>": {"user": "<name>", "role": "user"|"admin"}}`, read from a Prefect
Secret block (`JOBCLOUD_API_KEYS_BLOCK`) or a file (`JOBCLOUD_API_KEYS_FILE`). Tokens are kept
only as SHA-256 digests, so a lookup costs the same whatever the token is and a memory dump
shows no token. A user name becomes a job-store prefix (`users/<name>/`) and a run tag
(`user:<name>`), so it is a plain, short name.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import deque
from pathlib import Path
from typing import Literal

from fastapi import Request
from pydantic import BaseModel, Field, ValidationError, field_validator

from jobcloud.blocks.errors import UserError
from jobcloud.deployments.http_api.errors import ApiError
from jobcloud.deployments.http_api.settings import ApiSettings

USER_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,62}"
JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


class ApiKeysError(UserError):
    """The API-key list is missing or malformed; the API does not start without it."""


class Principal(BaseModel):
    """Who a token belongs to."""

    user: str = Field(pattern=f"^{USER_PATTERN}$")
    role: Literal["user", "admin"] = "user"

    @field_validator("user")
    @classmethod
    def _not_dots(cls, value: str) -> str:
        if value in (".", ".."):
            raise ValueError("a user name cannot be '.' or '..'")
        return value

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts: worth verifying as a JWT (checked after the API keys, so a key of
    that shape still works as a key)."""
    return bool(JWT_SHAPE.match(token))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class KeyRing:
    """Token digests -> principals."""

    def __init__(self, keys: dict[str, Principal]) -> None:
        self._by_digest = {_digest(t): p for t, p in keys.items()}

    def __len__(self) -> int:
        return len(self._by_digest)

    def lookup(self, token: str) -> Principal | None:
        return self._by_digest.get(_digest(token))

    @classmethod
    def parse(cls, text: str, source: str) -> KeyRing:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ApiKeysError(f"{source}: not JSON ({exc})") from None
        if not isinstance(raw, dict) or not raw:
            raise ApiKeysError(f'{source}: expected a non-empty object {{"<token>": {{"user": ..., "role": ...}}}}')
        keys: dict[str, Principal] = {}
        for token, entry in raw.items():
            if len(token) < 16:
                raise ApiKeysError(f"{source}: a token of user {entry!r} is shorter than 16 characters")
            try:
                keys[token] = Principal.model_validate(entry)
            except ValidationError as exc:
                raise ApiKeysError(f"{source}: bad entry for a token: {exc.errors()[0]['msg']}") from None
        return cls(keys)


def load_keys(settings: ApiSettings) -> KeyRing:
    """The key ring the settings name (the file wins over the block)."""
    if settings.keys_file is not None:
        path = Path(settings.keys_file)
        if not path.is_file():
            raise ApiKeysError(f"JOBCLOUD_API_KEYS_FILE {str(path)!r} is not a file")
        return KeyRing.parse(path.read_text(), str(path))
    if settings.keys_block:
        from prefect.blocks.system import Secret

        try:
            value = Secret.load(settings.keys_block).get()
        except ValueError as exc:
            raise ApiKeysError(f"the Prefect Secret block {settings.keys_block!r} cannot be read: {exc}") from None
        text = value if isinstance(value, str) else json.dumps(value)
        return KeyRing.parse(text, f"Secret block {settings.keys_block}")
    raise ApiKeysError(
        "no API keys: set JOBCLOUD_API_KEYS_BLOCK to a Prefect Secret block name (or JOBCLOUD_API_KEYS_FILE to a "
        'JSON file) holding {"<token>": {"user": "<name>", "role": "user"}}'
    )


class RateLimiter:
    """At most ``per_minute`` requests per user in any sliding 60 s window."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, user: str) -> float | None:
        """Count one request; None if allowed, else the seconds until the next is."""
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(user, deque())
            while hits and now - hits[0] >= 60:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return 60 - (now - hits[0])
            hits.append(now)
            return None


async def principal(request: Request) -> Principal:
    """The caller, from `Authorization: Bearer <token>` (an API key, or a JWT of the configured
    OIDC issuer: `oidc.py`); 401 without a known or valid token, 429 past the rate limit.

    A coroutine, run on the event loop: as a plain function FastAPI would run it on a worker
    thread for every request, which costs more than all it does (a digest, a dict lookup and
    the rate limit's one short SQLite transaction, about 0.1 ms)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    challenge = {"WWW-Authenticate": "Bearer"}
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "no bearer token", "Authorization", "send the header 'Authorization: Bearer <your API key>'", challenge)
    token = token.strip()
    who = request.app.state.keys.lookup(token)
    oidc = getattr(request.app.state, "oidc", None)
    if who is None and oidc is not None and looks_like_jwt(token):
        who = await oidc.principal(token)  # a 401 saying why when it is refused
    if who is None:
        raise ApiError(
            401,
            "unknown API key" if oidc is None else "unknown API key (and not a JWT)",
            "Authorization",
            "check the token in 'Authorization: Bearer <API key>'; ask the operator for a key"
            + ("" if oidc is None else ", or send a token of your institution's OIDC issuer"),
            challenge,
        )
    wait = request.app.state.rate.hit(who.user)
    if wait is not None:
        raise ApiError(
            429,
            f"more than {request.app.state.rate.per_minute} requests in a minute",
            None,
            f"retry after {wait:.0f} s",
            {"Retry-After": str(max(1, int(wait + 0.999)))},
        )
    return who


def owner_for(who: Principal, owner: str | None) -> str:
    """Whose files and jobs a request acts on: the caller's, or any user's for an admin."""
    if owner is None or owner == who.user:
        return who.user
    if not who.is_admin:
        raise ApiError(403, "only an admin may act for another user", "owner", "drop the owner parameter")
    if not re.fullmatch(USER_PATTERN, owner) or owner in (".", ".."):
        raise ApiError(400, f"{owner!r} is not a user name", "owner", f"a user name matches {USER_PATTERN}")
    return owner
