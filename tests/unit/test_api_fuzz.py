"""Property-based fuzzing of the HTTP API against its own OpenAPI schema (schemathesis).

Every operation of `/openapi.json` gets generated requests, valid and invalid (paths, query
strings, JSON bodies), sent in-process to the ASGI app with a valid bearer token, on a fresh
job store and the session's real Prefect server. The one property: no answer is a 5xx
(`not_a_server_error`) - a user's input never gives a 500 (docs/api.md, "Errors"). A few files
and one job of the caller exist, so some requests reach past the 404s.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from jobcloud.deployments.http_api.auth import RateLimiter
from jobcloud.deployments.http_api.services import Backend
from tests.conftest import ROOT
from tests.prefect_helpers import prefect_client

# Users of their own: the session's Prefect server is shared, and other modules count alice's jobs.
TOKENS = {"fuzzer": "fuzzer-token-0123456789", "fuzz-other": "fuzz-other-token-0123456789", "fuzz-admin": "fuzz-admin-token-0123456789"}
KEYS = {
    TOKENS["fuzzer"]: {"user": "fuzzer"},
    TOKENS["fuzz-other"]: {"user": "fuzz-other"},
    TOKENS["fuzz-admin"]: {"user": "fuzz-admin", "role": "admin"},
}


def auth(user: str) -> dict[str, str]:
    return {"authorization": f"Bearer {TOKENS[user]}"}


MAX_EXAMPLES = int(os.environ.get("JOBCLOUD_FUZZ_EXAMPLES", "20"))  # per operation and phase; the whole module stays well under 2 minutes


def _app() -> Any:
    """The app, made once at collection: schemathesis reads its schema then. Its job store and
    settings are set per run by `fuzz_backend` (routes read them from `app.state` per request).
    (`schemathesis.pytest.from_fixture` would make it in a fixture, but fails on pytest 9:
    `'Function' object has no attribute '_nodeid'`.)"""
    from jobcloud.deployments.http_api.app import create_app
    from jobcloud.deployments.http_api.auth import KeyRing
    from jobcloud.deployments.http_api.settings import ApiSettings

    return create_app(ApiSettings(keys_file=None), KeyRing.parse(json.dumps(KEYS), "test"), Backend())


APP = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


# Real names, swapped into generated paths now and then so requests also reach past the 404s.
REAL = {"app": "linefit", "version": "v1", "entrypoint": "train", "key": "cfg.yaml", "path": "output/metrics.txt"}
JOBS: list[str] = []  # the user's job and another user's, made by `fuzz_backend`


@schema.hook
def flatmap_path_parameters(_: Any, path_parameters: dict[str, Any] | None) -> Any:
    if not path_parameters:
        return st.just(path_parameters)
    real = {k: v for k, v in REAL.items() if k in path_parameters}
    if "job_id" in path_parameters and JOBS:
        return st.sampled_from([None, *JOBS]).map(lambda job: {**path_parameters, **real, "job_id": job} if job else path_parameters)
    return st.sampled_from([path_parameters, {**path_parameters, **real}])


@schema.hook
def flatmap_body(context: Any, body: Any) -> Any:
    # Job requests with a real entrypoint and existing inputs too, so the fuzzed env, hardware,
    # timeout, callback_url and priority reach the job validation and the submission.
    if not isinstance(body, dict) or context.operation is None or context.operation.method.upper() != "POST":
        return st.just(body)
    if context.operation.path == "/jobs":
        real = {"entrypoint": "linefit/v1/train", "config_id": "cfg.yaml", "data_ids": ["data/points.csv"]}
    elif context.operation.path.endswith("/compute"):
        params = body.get("parameters") or {}
        real = {"data_in": ["data/points.csv"]}
        if isinstance(params, dict):
            real["parameters"] = {**params, "config_id": "cfg.yaml"}
    else:
        return st.just(body)
    return st.sampled_from([body, {**body, **real}])


@schema.hook
def flatmap_case(_: Any, case: Any) -> Any:
    # A user (sees only their own files and jobs) or an admin (may pass owner=, secrets).
    def signed(user: str) -> Any:
        case.headers = {**(case.headers or {}), **auth(user)}
        return case

    return st.sampled_from(["fuzzer", "fuzz-admin"]).map(signed)


@pytest.fixture(scope="module", autouse=True)
def fuzz_backend(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> Iterator[None]:
    """A fresh job store with a few of the user's files, no rate limit in the way, the project's
    catalog, no container engine (image_present is null) and the session's Prefect server."""
    from jobcloud.blocks.store.job_store import JobStore
    from jobcloud.deployments.http_api.settings import ApiSettings

    tmp = tmp_path_factory.mktemp("api-fuzz")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JOBCLOUD_CONFIG", str(ROOT / "application_config.yaml"))
        mp.setenv("JOBCLOUD_HOME", str(tmp / "home"))
        mp.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        store = JobStore(str(tmp / "store"))
        store.write_bytes("users/fuzzer/cfg.yaml", b"epochs: 1\n")
        store.write_bytes("users/fuzzer/data/points.csv", b"x,y\n1,2\n")
        backend = Backend(store)
        with prefect_client(prefect_api) as pc:
            JOBS[:] = [_job(pc, "fuzzer"), _job(pc, "fuzz-other")]
        store.write_bytes(f"jobs/{JOBS[0]}/output/metrics.txt", b"loss 0.1\n")
        store.write_bytes(f"jobs/{JOBS[0]}/manifest.json", json.dumps({"outputs": [{"key": "output/metrics.txt"}]}).encode())
        mp.setattr(APP.state, "backend", backend)
        mp.setattr(APP.state, "settings", ApiSettings(keys_file=None, upload_dir=tmp / "spool", max_upload_bytes=1024 * 1024))
        mp.setattr(APP.state, "rate", RateLimiter(1_000_000))
        yield
        backend.close()
        JOBS.clear()


def _job(client: Any, user: str) -> str:
    """A queued flow run tagged as the API tags a job of linefit/v1/train."""
    from prefect import flow

    @flow(name="api-fuzz-probe")
    def probe() -> None:
        pass

    tags = ["app:linefit", "version:v1", "entrypoint:train", f"user:{user}"]
    return str(client.create_flow_run(probe, tags=tags).id)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_no_server_error(case: Any) -> None:
    signed = any(k.lower() == "authorization" for k in (case.headers or {}))
    # The coverage phase's cases skip `flatmap_case`: those go as the user.
    case.call_and_validate(headers=None if signed else auth("fuzzer"), checks=[not_a_server_error])
