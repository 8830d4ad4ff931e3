"""OIDC tokens through a real `jobcloud api serve` (uvicorn, its own process, a real port) in
front of a real Prefect server, trusting the local issuer of tests/oidc_issuer.py: the API
process discovers the issuer and fetches its JWKS over HTTP itself, as in production. A user's
token reaches the file, job and TES routes; a token in the admin group acts for other users;
expired, wrong-audience and wrong-key tokens are 401s with the API's JSON error body; API keys
keep working beside the issuer. tests/unit/test_api_oidc.py covers the same rules (and more
cases) in-process; this module proves the settings, the startup and the fetch in a real server.

No worker and no container: nothing here runs a job, so the module takes seconds.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from jobcloud.deployments.server.processes import PrefectServer, Proc
from tests.api_fixtures import KEYS, TOKENS
from tests.conftest import ROOT
from tests.e2e.api_process import serve_api, wait_answering
from tests.oidc_issuer import ADMIN_GROUP, AUDIENCE, Issuer

pytestmark = pytest.mark.e2e

TES = "/ga4gh/tes/v1"
DISCOVERY = "/realms/lab/.well-known/openid-configuration"


@dataclass
class Served:
    """The running API, the issuer it trusts, and a client of it."""

    url: str
    api: Proc
    issuer: Issuer
    http: httpx.Client


def _h(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("e2e-api-oidc")
    keys = tmp / "keys.json"
    keys.write_text(json.dumps(KEYS))
    issuer = Issuer()
    server = PrefectServer(home=tmp / "prefect-home")
    # Nothing of the caller's JOBCLOUD_* settings leaks in, and no proxy: the issuer is on
    # loopback, and the API's JWKS fetch (httpx, trusting the environment) must reach it directly.
    proxies = {"http_proxy", "https_proxy", "all_proxy"}
    base = {k: v for k, v in os.environ.items() if not k.startswith("JOBCLOUD_") and k.lower() not in proxies}
    base.update(
        JOBCLOUD_HOME=str(tmp / "jc-home"),
        JOBCLOUD_STORAGE=str(tmp / "store"),
        JOBCLOUD_CONFIG=str(ROOT / "application_config.yaml"),
        JOBCLOUD_API_KEYS_FILE=str(keys),
        JOBCLOUD_API_OIDC_ISSUER=issuer.url,
        JOBCLOUD_API_OIDC_AUDIENCE=AUDIENCE,
        JOBCLOUD_API_OIDC_ADMIN_GROUP=ADMIN_GROUP,
        PYTHONPATH=str(ROOT),
    )
    api: Proc | None = None
    try:
        server.start()
        api, url = serve_api(tmp, server.env(base), "api")
        wait_answering(api, url)
        with httpx.Client(base_url=url, timeout=30) as http:
            yield Served(url, api, issuer, http)
    finally:
        if api is not None:
            api.stop()
        server.stop()
        issuer.stop()


def _refused(r: httpx.Response, words: str) -> None:
    """Assert ``r`` is the API's 401 for a refused OIDC token, saying ``words``."""
    assert r.status_code == 401, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    error = r.json()["error"]
    assert set(error) == {"status", "field", "message", "fix"}, error
    assert error["status"] == 401 and error["field"] == "Authorization" and error["fix"], error
    assert error["message"].startswith("OIDC token refused: ") and words in error["message"], error


def test_a_users_token_reaches_the_protected_routes(served: Served) -> None:
    http, alice = served.http, served.issuer.token()
    assert http.get("/status").json() == {"status": "available"}  # no token needed
    assert served.issuer.jwks_hits() == 0  # the API fetches the keys at the first token, not at start
    tasks = http.get(f"{TES}/tasks", headers=_h(alice))
    assert tasks.status_code == 200 and tasks.json() == {"tasks": []}, tasks.text
    assert http.get(f"{TES}/service-info", headers=_h(alice)).status_code == 200
    jobs = http.get("/jobs", headers=_h(alice))
    assert jobs.status_code == 200 and jobs.json() == [], jobs.text
    up = http.put("/files/in/a.txt", content=b"hello", headers=_h(alice))
    assert up.status_code == 201 and up.json()["key"] == "in/a.txt", up.text
    listed = http.get("/files", params={"prefix": "in"}, headers=_h(alice))
    assert listed.status_code == 200 and listed.json()["owner"] == "alice", listed.text
    assert [e["key"] for e in listed.json()["entries"]] == ["in/a.txt"]
    assert http.get("/files/in/a.txt", headers=_h(alice)).content == b"hello"
    # One process, one fetch: discovered once, the JWKS fetched once and cached for every request.
    assert served.issuer.server.hits.count(DISCOVERY) == 1 and served.issuer.jwks_hits() == 1


def test_an_api_key_still_works_beside_the_issuer(served: Served) -> None:
    http = served.http
    # Alice's API key and her OIDC token are one user: the file uploaded with the token is hers.
    assert http.put("/files/both/one.txt", content=b"1", headers=_h(served.issuer.token())).status_code == 201
    listed = http.get("/files", params={"prefix": "both"}, headers=_h(TOKENS["alice"]))
    assert listed.status_code == 200 and [e["key"] for e in listed.json()["entries"]] == ["both/one.txt"], listed.text
    assert http.put("/files/private/b.txt", content=b"bob's", headers=_h(TOKENS["bob"])).status_code == 201
    assert http.get(f"{TES}/tasks", headers=_h(TOKENS["bob"])).json() == {"tasks": []}
    # A key that is neither known nor a JWT: the key's 401, which mentions the issuer as a way in.
    r = http.get("/jobs", headers=_h("not-a-key-0123456789"))
    assert r.status_code == 401 and r.json()["error"]["message"] == "unknown API key (and not a JWT)", r.text
    assert "OIDC" in r.json()["error"]["fix"]


def test_the_admin_group_is_admin(served: Served) -> None:
    http, issuer = served.http, served.issuer
    bob = TOKENS["bob"]
    assert http.put("/files/for-admins/c.txt", content=b"bob's too", headers=_h(bob)).status_code == 201
    # A user (no group, or other groups only) may not act for bob: 403 naming the field.
    for token in (issuer.token(), issuer.token(preferred_username="ops", groups=["staff"])):
        for path in ("/files", "/jobs"):
            r = http.get(path, params={"owner": "bob"}, headers=_h(token))
            assert r.status_code == 403 and r.json()["error"]["field"] == "owner", (path, r.text)
    # In the admin group (a list, or a comma-separated string as some issuers send it): bob's files.
    for groups in (["staff", ADMIN_GROUP], f"staff,{ADMIN_GROUP}"):
        admin = issuer.token(preferred_username="ops", groups=groups)
        listed = http.get("/files", params={"owner": "bob", "prefix": "for-admins"}, headers=_h(admin))
        assert listed.status_code == 200 and listed.json()["owner"] == "bob", listed.text
        assert [e["key"] for e in listed.json()["entries"]] == ["for-admins/c.txt"]
        assert http.get("/files/for-admins/c.txt", params={"owner": "bob"}, headers=_h(admin)).content == b"bob's too"
        jobs = http.get("/jobs", params={"owner": "bob"}, headers=_h(admin))
        assert jobs.status_code == 200 and jobs.json() == [], jobs.text


def test_refused_tokens_are_401_with_the_error_body(served: Served) -> None:
    http, issuer = served.http, served.issuer
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    cases = {
        "expired": (issuer.token(exp=now - 3600, iat=now - 7200), "it has expired"),
        "wrong audience": (issuer.token(aud="another-service"), f"its audience is not {AUDIENCE!r}"),
        # Another key under the issuer's own key id: the signature is what gives it away.
        "wrong key": (issuer.token(key=stranger), "its signature does not verify with the issuer's keys"),
    }
    for case, (token, words) in cases.items():
        for path in (f"{TES}/tasks", "/jobs", "/files"):
            _refused(http.get(path, headers=_h(token)), words)
        _refused(http.put("/files/in/x.txt", content=b"x", headers=_h(token)), words)
        assert "x.txt" not in http.get("/files", params={"prefix": "in"}, headers=_h(issuer.token())).text, case
    # None of these needed the issuer again: its keys were cached.
    assert issuer.jwks_hits() == 1
