"""OIDC JWTs for the whole HTTP API against a real local issuer (tests/oidc_issuer.py: an HTTP
server this test starts, serving a discovery document and a JWKS of keys made here, signing
tokens with PyJWT), through FastAPI's in-process client. Good tokens reach file, job and TES
routes as their user (admin by group); expired, wrong-audience, wrong-issuer, wrong-key,
unsigned and HMAC tokens are 401s; the keys are fetched once, cached, and fetched again when the
issuer rotates them. tests/e2e/test_api_oidc_serve.py does the same through a real
`jobcloud api serve`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient

from jobcloud.blocks.settings import ApiSettings
from jobcloud.blocks.store.job_store import JobStore
from jobcloud.deployments.http_api.app import create_app
from jobcloud.deployments.http_api.auth import KeyRing
from jobcloud.deployments.http_api.oidc import REFETCH_FLOOR_S, OidcSettingsError, OidcVerifier
from jobcloud.deployments.http_api.services import Backend
from tests.api_fixtures import KEYS, TOKENS
from tests.oidc_issuer import ADMIN_GROUP, AUDIENCE, Issuer


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    found = Issuer()
    yield found
    found.stop()


def _app(tmp_path: Path, issuer: Issuer, keys: KeyRing | None = None, **more: Any) -> TestClient:
    settings = ApiSettings(
        oidc_issuer=issuer.url,
        oidc_audience=AUDIENCE,
        oidc_admin_group=ADMIN_GROUP,
        upload_dir=tmp_path / "spool",
        state_dir=tmp_path / "api-state",
        **more,
    )
    return TestClient(create_app(settings, keys, Backend(JobStore(str(tmp_path / "store")))))


def _h(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
def client(tmp_path: Path, issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("JOBCLOUD_HOME", str(tmp_path / "home"))
    with _app(tmp_path, issuer, KeyRing.parse(json.dumps(KEYS), "test")) as c:
        yield c


def test_a_good_token_is_its_user_on_every_part_of_the_api(client: TestClient, issuer: Issuer) -> None:
    alice = issuer.token()
    assert client.put("/files/in/a.txt", content=b"hi", headers=_h(alice)).status_code == 201
    listed = client.get("/files", params={"prefix": "in"}, headers=_h(alice))
    assert listed.status_code == 200 and "in/a.txt" in listed.text
    # The same user through an API key sees the same files: one user, two kinds of token.
    assert "in/a.txt" in client.get("/files", params={"prefix": "in"}, headers=_h(TOKENS["alice"])).text
    assert (
        client.get("/files", headers=_h(issuer.token(preferred_username="bob"))).json()
        == client.get("/files", headers=_h(TOKENS["bob"])).json()
    )
    # Not an admin without the group; an admin with it.
    assert client.get("/files", params={"owner": "bob"}, headers=_h(alice)).status_code == 403
    admin = issuer.token(preferred_username="ops", groups=["staff", ADMIN_GROUP])
    assert client.get("/files", params={"owner": "alice"}, headers=_h(admin)).status_code == 200
    assert issuer.jwks_hits() == 1  # fetched once, then cached


@pytest.mark.parametrize(
    "case, claims, words",
    [
        ("expired", {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "expired"),
        ("wrong audience", {"aud": "another-service"}, "audience"),
        ("wrong issuer", {"iss": "https://evil.example.org/realms/lab"}, "issuer"),
        ("no exp", {"exp": None}, "exp"),
        ("not yet valid", {"nbf": int(time.time()) + 3600}, "not yet valid"),
        ("bad user name", {"preferred_username": "Alice Smith"}, "preferred_username"),
        ("no user", {"preferred_username": None}, "preferred_username"),
    ],
)
def test_bad_claims_are_401(client: TestClient, issuer: Issuer, case: str, claims: dict[str, Any], words: str) -> None:
    r = client.get("/files", headers=_h(issuer.token(**claims)))
    assert r.status_code == 401, (case, r.text)
    assert words in r.json()["error"]["message"], (case, r.text)
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_wrong_keys_and_algorithms_are_401(client: TestClient, issuer: Issuer) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": issuer.url, "aud": AUDIENCE, "exp": now + 300, "preferred_username": "alice"}
    cases = {
        "signed by another key under the issuer's key id": (issuer.token(key=stranger), "signature"),
        "an unknown key id": (issuer.token(kid="nobody", key=stranger), "not one of the issuer's keys"),
        "unsigned": (jwt.encode(claims, None, algorithm="none", headers={"kid": "rsa-1"}), "algorithm 'none'"),
        # HMAC with the issuer's public key as the secret (the classic confusion attack).
        "HMAC": (jwt.encode(claims, "a-shared-secret-of-enough-length", algorithm="HS256", headers={"kid": "rsa-1"}), "HS256"),
        "not a JWT at all": ("aaaa.bbbb.cccc", "not a JWT"),
    }
    for case, (token, words) in cases.items():
        r = client.get("/files", headers=_h(token))
        assert r.status_code == 401 and words in r.json()["error"]["message"], (case, r.text)
    assert client.get("/ga4gh/tes/v1/service-info", headers=_h(issuer.token(key=stranger))).status_code == 401
    assert client.get("/jobs", headers=_h(issuer.token(aud="x"))).status_code == 401


def test_the_issuer_rotates_its_keys(client: TestClient, issuer: Issuer) -> None:
    old = issuer.token()
    assert client.get("/files", headers=_h(old)).status_code == 200
    issuer.rotate("ec-2", ec.generate_private_key(ec.SECP256R1()), keep=False)
    new = issuer.token(kid="ec-2")
    # A token with an unknown key id fetches the keys again, once the last fetch is older than
    # the floor (aged here rather than waited for).
    client.app.state.oidc._fetched_at -= REFETCH_FLOOR_S + 1
    assert client.get("/files", headers=_h(new)).status_code == 200
    assert issuer.jwks_hits() == 2
    # The old key is gone from the issuer, so from here too.
    assert client.get("/files", headers=_h(old)).status_code == 401
    # A stream of forged key ids does not make the API fetch again within the floor.
    for i in range(5):
        assert client.get("/files", headers=_h(issuer.token(kid=f"forged-{i}", key=issuer.keys["ec-2"]))).status_code == 401
    assert issuer.jwks_hits() == 2


def test_only_oidc_no_key_list_needed(tmp_path: Path, issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCLOUD_HOME", str(tmp_path / "home"))
    with _app(tmp_path, issuer, oidc_jwks_url=issuer.server.url("/realms/lab/certs")) as c:
        assert c.get("/files", headers=_h(issuer.token())).status_code == 200
        r = c.get("/files", headers=_h(TOKENS["alice"]))
        assert r.status_code == 401 and "OIDC" in r.json()["error"]["fix"]
    assert "/realms/lab/.well-known/openid-configuration" not in issuer.server.hits  # the JWKS URL was given


def test_an_issuer_that_is_away_is_503_not_401(tmp_path: Path, issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCLOUD_HOME", str(tmp_path / "home"))
    token = issuer.token()
    issuer.server.stop()
    with _app(tmp_path, issuer) as c:
        r = c.get("/files", headers=_h(token))
        assert r.status_code == 503 and "cannot be fetched" in r.json()["error"]["message"]


def test_settings_that_do_not_fit_stop_the_api() -> None:
    with pytest.raises(OidcSettingsError, match="AUDIENCE"):
        OidcVerifier(ApiSettings(oidc_issuer="https://id.example.org"))
    with pytest.raises(OidcSettingsError, match="HS256"):
        OidcVerifier(ApiSettings(oidc_issuer="https://id.example.org", oidc_audience="a", oidc_algorithms="RS256,HS256"))
