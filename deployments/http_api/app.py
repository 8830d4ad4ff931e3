"""The FastAPI application: `create_app()` wires settings, keys, limits, errors and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from jobcloud.deployments.http_api import errors, routes_apps, routes_files, routes_jobs, routes_presigned, routes_swiss
from jobcloud.deployments.http_api.auth import KeyRing, load_keys
from jobcloud.deployments.http_api.job_cache import JobCache
from jobcloud.deployments.http_api.limits import BodyLimit, SharedRateLimiter, SubmitLock
from jobcloud.deployments.http_api.oidc import verifier_of
from jobcloud.deployments.http_api.services import Backend
from jobcloud.deployments.http_api.settings import ApiSettings, get_api_settings
from jobcloud.deployments.http_api.tes import routes as routes_tes

DESCRIPTION = """JobCloud's HTTP API: the application registry, your files, your jobs, and the
Swiss AI Center service contract. Every route but `/status`, `/swiss/.../status` and the docs
needs `Authorization: Bearer <API key>` (or a JWT of the configured OIDC issuer). Errors are `{"error": {"status", "field", "message", "fix"}}`."""


def state_folder(settings: ApiSettings) -> Path:
    """Where the API processes of one deployment share their limits (JOBCLOUD_API_STATE_DIR)."""
    if settings.state_dir is not None:
        return Path(settings.state_dir)
    from jobcloud.blocks.settings import get_settings

    return get_settings().home / "api"


def create_app(settings: ApiSettings | None = None, keys: KeyRing | None = None, backend: Backend | None = None) -> FastAPI:
    """The app; ``keys`` and ``backend`` default to those the settings name (tests pass their own)."""
    settings = settings or get_api_settings()
    oidc = verifier_of(settings)  # bad OIDC settings: fail at start, not at the first request
    if keys is None:
        # No keys, no API (fail at start) unless an OIDC issuer signs the users in.
        only_oidc = oidc is not None and settings.keys_file is None and not settings.keys_block
        keys = KeyRing({}) if only_oidc else load_keys(settings)
    backend = backend or Backend()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        backend.close()

    app = FastAPI(title="JobCloud API", version="1", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.keys = keys
    app.state.oidc = oidc
    state_dir = state_folder(settings)
    app.state.rate = SharedRateLimiter(state_dir / "limits.sqlite", settings.rate_per_minute)
    backend.submit_lock = SubmitLock(state_dir / "submit.lock")
    app.state.backend = backend
    app.state.jobs = JobCache(
        # The backend of the moment (tests swap it), asked on a worker thread.
        lambda job_id: app.state.backend.job_answer(job_id),
        live_s=settings.job_refresh_s,
        final_s=settings.final_job_cache_s,
    )
    errors.install(app)
    # Uploads stream under their own, larger limit (routes_files.upload).
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, exempt=("/files/",))

    @app.get("/status", tags=["health"])
    def status() -> dict[str, Any]:
        """Whether the API answers (no token needed)."""
        return {"status": "available"}

    # routes_presigned first: GET /files/{key}:download-url would otherwise be a download.
    for module in (routes_apps, routes_presigned, routes_files, routes_jobs, routes_swiss, routes_tes):
        app.include_router(module.router)
    return app
