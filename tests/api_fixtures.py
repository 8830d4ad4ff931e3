"""Shared pieces of the HTTP API tests: a key list, an app on a fresh job store, clients."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from jobcloud.blocks.store.job_store import JobStore
from jobcloud.deployments.http_api.app import create_app
from jobcloud.deployments.http_api.auth import KeyRing
from jobcloud.deployments.http_api.services import Backend
from jobcloud.deployments.http_api.settings import ApiSettings
from tests.conftest import ROOT

TOKENS = {
    "alice": "alice-token-0123456789",
    "bob": "bob-token-0123456789abc",
    "root": "root-token-0123456789abc",
}
KEYS = {
    TOKENS["alice"]: {"user": "alice", "role": "user"},
    TOKENS["bob"]: {"user": "bob", "role": "user"},
    TOKENS["root"]: {"user": "root", "role": "admin"},
}


def auth(user: str) -> dict[str, str]:
    return {"authorization": f"Bearer {TOKENS[user]}"}


def write_keys(path: Path) -> Path:
    path.write_text(json.dumps(KEYS))
    return path


def make_app(tmp_path: Path, store: JobStore | None = None, **limits: Any) -> tuple[TestClient, JobStore]:
    """The app on ``store`` (default: a fresh local one), its limits shared through a state
    folder of this test's own."""
    store = store or JobStore(str(tmp_path / "store"))
    settings = ApiSettings(
        keys_file=write_keys(tmp_path / "keys.json"), upload_dir=tmp_path / "spool", state_dir=tmp_path / "api-state", **limits
    )
    app = create_app(settings, KeyRing.parse(json.dumps(KEYS), "test"), Backend(store))
    return TestClient(app), store


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: str) -> tuple[TestClient, JobStore]:
    """A TestClient of the app on a fresh local job store, with the project's catalog, talking
    to the session's Prefect server (named explicitly: a test before may have changed what the
    environment says)."""
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    monkeypatch.setenv("JOBCLOUD_CONFIG", str(ROOT / "application_config.yaml"))
    monkeypatch.setenv("JOBCLOUD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")  # registry tests: no engine
    client, store = make_app(tmp_path)
    with client:
        yield client, store
