"""OIDC bearer tokens (JWTs from an institution's issuer) for the whole HTTP API, beside the
API keys (docs/api.md#oidc-tokens).

A token is accepted when its signature verifies against one of the issuer's keys (its JWKS,
fetched and cached), with an accepted asymmetric algorithm, and `iss`, `aud` and `exp` are right
(`nbf`/`iat` too when present, with a small leeway). The user is a configured claim, the admin
role membership of a configured group. Every failure is a 401 saying what was wrong, never
which key would have worked.

The keys are fetched with an async client on the event loop (the `principal` dependency is a
coroutine) and kept `jwks_cache_s`; a token signed with a key id not in the cache (the issuer
rotated its keys) fetches them again at once, at most every `REFETCH_FLOOR_S`, so a stream of
forged key ids cannot make the API hammer the issuer.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import httpx
import jwt

from jobcloud.blocks.errors import UserError
from jobcloud.blocks.settings import ApiSettings
from jobcloud.blocks.url_policy import split_patterns
from jobcloud.deployments.http_api.auth import USER_PATTERN, Principal
from jobcloud.deployments.http_api.errors import ApiError

REFETCH_FLOOR_S = 30.0
FETCH_TIMEOUT_S = 10.0
# Symmetric and unsigned tokens are never accepted: their "key" would be public or absent.
FORBIDDEN_ALGORITHMS = {"none", "HS256", "HS384", "HS512"}


class OidcSettingsError(UserError):
    """The OIDC settings do not fit together (the API does not start)."""


def _denied(reason: str) -> ApiError:
    return ApiError(
        401,
        f"OIDC token refused: {reason}",
        "Authorization",
        "sign in again at your institution's issuer and send the new token as 'Authorization: Bearer <token>'",
        {"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


class OidcVerifier:
    """Verifies the JWTs of one issuer; one per API process."""

    def __init__(self, settings: ApiSettings) -> None:
        if not settings.oidc_issuer or not settings.oidc_audience:
            raise OidcSettingsError("JOBCLOUD_API_OIDC_ISSUER and JOBCLOUD_API_OIDC_AUDIENCE go together")
        algorithms = split_patterns(settings.oidc_algorithms)
        bad = sorted(set(algorithms) & FORBIDDEN_ALGORITHMS)
        if bad or not algorithms:
            raise OidcSettingsError(f"JOBCLOUD_API_OIDC_ALGORITHMS: {', '.join(bad) or 'none given'} cannot be accepted")
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.jwks_url = settings.oidc_jwks_url
        self.algorithms = algorithms
        self.user_claim = settings.oidc_user_claim
        self.groups_claim = settings.oidc_groups_claim
        self.admin_group = settings.oidc_admin_group
        self.cache_s = settings.oidc_jwks_cache_s
        self.leeway_s = settings.oidc_leeway_s
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._error = ""
        self._lock = asyncio.Lock()

    async def principal(self, token: str) -> Principal:
        """Who ``token`` belongs to; `ApiError` 401 saying why it is refused."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _denied(f"not a JWT ({exc})") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise _denied(f"algorithm {algorithm!r} is not accepted (JOBCLOUD_API_OIDC_ALGORITHMS: {', '.join(self.algorithms)})")
        key = await self._key(header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise _denied("it has expired") from None
        except jwt.InvalidAudienceError:
            raise _denied(f"its audience is not {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise _denied(f"its issuer is not {self.issuer!r}") from None
        except jwt.InvalidSignatureError:
            raise _denied("its signature does not verify with the issuer's keys") from None
        except jwt.PyJWTError as exc:
            raise _denied(str(exc)) from None
        return self._principal_of(claims)

    def _needs_fetch(self, kid: str | None) -> bool:
        age = time.monotonic() - self._fetched_at
        if self._fetched_at == 0 or age > self.cache_s:
            return True
        # An unknown key id: the issuer may have rotated its keys (at most every REFETCH_FLOOR_S).
        return kid is not None and kid not in self._keys and age > REFETCH_FLOOR_S

    def _principal_of(self, claims: dict[str, Any]) -> Principal:
        user = claims.get(self.user_claim)
        if not isinstance(user, str) or not re.fullmatch(USER_PATTERN, user) or user in (".", ".."):
            raise _denied(f"claim {self.user_claim!r} is not a user name (lowercase letters, digits, '.', '_', '-'): {user!r}")
        groups = claims.get(self.groups_claim) or []
        if isinstance(groups, str):
            groups = groups.replace(",", " ").split()
        admin = self.admin_group is not None and isinstance(groups, list) and self.admin_group in groups
        return Principal(user=user, role="admin" if admin else "user")

    async def _key(self, kid: str | None) -> jwt.PyJWK:
        """The issuer's key ``kid`` (the only key when the token names none and there is one)."""
        if self._needs_fetch(kid):
            async with self._lock:
                if self._needs_fetch(kid):  # another request may have fetched them meanwhile
                    await self._fetch()
        if not self._keys:
            raise ApiError(
                503, f"the OIDC issuer's keys cannot be fetched: {self._error}", None, "try again later; tell the operator if it lasts"
            )
        if kid is None:
            if len(self._keys) == 1:
                return next(iter(self._keys.values()))
            raise _denied("it names no key id (kid) and the issuer has several keys")
        if kid not in self._keys:
            raise _denied(f"key id {kid!r} is not one of the issuer's keys")
        return self._keys[kid]

    async def _fetch(self) -> None:
        """Fetch the JWKS (discovering its URL first when not set). A failure keeps the keys
        already known; with none known, requests are 503s (the issuer is away, not the token
        wrong) until a try, at most every REFETCH_FLOOR_S, succeeds."""
        try:
            async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, follow_redirects=True) as client:
                url = self.jwks_url or await self._discover(client)
                response = await client.get(url)
                response.raise_for_status()
                keys = jwt.PyJWKSet.from_dict(response.json()).keys
        except (httpx.HTTPError, json.JSONDecodeError, jwt.PyJWTError, KeyError, TypeError, ValueError) as exc:
            # The keys known so far stay; no new try before the floor, whatever tokens come.
            self._fetched_at = time.monotonic() - max(0.0, self.cache_s - REFETCH_FLOOR_S)
            self._error = f"{type(exc).__name__}: {exc}"
            return
        self._keys = {k.key_id: k for k in keys if k.key_id is not None}
        if not self._keys and len(keys) == 1:
            self._keys = {"": keys[0]}
        self._fetched_at = time.monotonic()

    async def _discover(self, client: httpx.AsyncClient) -> str:
        response = await client.get(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
        response.raise_for_status()
        self.jwks_url = str(response.json()["jwks_uri"])
        return self.jwks_url


def verifier_of(settings: ApiSettings) -> OidcVerifier | None:
    """The verifier the settings ask for, or None without an issuer."""
    return OidcVerifier(settings) if settings.oidc_issuer else None
