"""A real local OIDC issuer for the API's tests: an HTTP server (tests/file_server.py) serving a
discovery document and a JWKS of keys made here (RSA and EC, `cryptography`), and tokens signed
with PyJWT. Shared by the in-process tests (tests/unit/test_api_oidc.py) and the one against a
real `jobcloud api serve` (tests/e2e/test_api_oidc_serve.py), so both trust the same issuer."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.file_server import FileServer, Page

AUDIENCE = "jobcloud-api"
ADMIN_GROUP = "jobcloud-admins"


class Issuer:
    """A local OIDC issuer: its discovery document and JWKS served over HTTP, its keys here."""

    def __init__(self) -> None:
        self.server = FileServer()
        self.url = self.server.url("/realms/lab")
        self.keys: dict[str, Any] = {}
        self.rotate("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048))
        self.server.pages["/realms/lab/.well-known/openid-configuration"] = Page(
            json.dumps({"issuer": self.url, "jwks_uri": self.server.url("/realms/lab/certs")}).encode()
        )

    def rotate(self, kid: str, key: Any, keep: bool = True) -> None:
        """Publish ``key`` under ``kid`` (beside the old ones when ``keep``)."""
        self.keys = {**(self.keys if keep else {}), kid: key}
        published = []
        for name, private in self.keys.items():
            jwk = json.loads(
                jwt.algorithms.get_default_algorithms()["RS256" if isinstance(private, rsa.RSAPrivateKey) else "ES256"].to_jwk(
                    private.public_key()
                )
            )
            published.append({**jwk, "kid": name, "use": "sig"})
        self.server.pages["/realms/lab/certs"] = Page(json.dumps({"keys": published}).encode())

    def token(self, kid: str = "rsa-1", key: Any = None, **claims: Any) -> str:
        """A token of user alice for AUDIENCE, valid 5 minutes, signed with ``key`` (default:
        the issuer's own key ``kid``); ``claims`` add to or replace those, None drops one."""
        now = int(time.time())
        body = {"iss": self.url, "aud": AUDIENCE, "exp": now + 300, "iat": now, "preferred_username": "alice", **claims}
        body = {k: v for k, v in body.items() if v is not None}
        private = key if key is not None else self.keys[kid]
        alg = "RS256" if isinstance(private, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(body, private, algorithm=alg, headers={"kid": kid})

    def jwks_hits(self) -> int:
        return self.server.hits.count("/realms/lab/certs")

    def stop(self) -> None:
        self.server.stop()
