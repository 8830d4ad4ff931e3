"""The FastAPI application: `create_app()` wires settings, keys, limits, errors and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from jobcloud.deployments.http_api import errors, routes_apps, routes_files, routes_jobs, routes_swiss
from jobcloud.deployments.http_api.auth import KeyRing, RateLimiter, load_keys
from jobcloud.deployments.http_api.limits import BodyLimit
from jobcloud.deployments.http_api.services import Backend
from jobcloud.deployments.http_api.settings import ApiSettings, get_api_settings

DESCRIPTION = """JobCloud's HTTP API: the application registry, your files, your jobs, and the
Swiss AI Center service contract. Every route but `/status`, `/swiss/.../status` and the docs
needs `Authorization: Bearer <API key>`. Errors are `{"error": {"status", "field", "message", "fix"}}`."""


def create_app(settings: ApiSettings | None = None, keys: KeyRing | None = None, backend: Backend | None = None) -> FastAPI:
    """The app; ``keys`` and ``backend`` default to those the settings name (tests pass their own)."""
    settings = settings or get_api_settings()
    keys = keys or load_keys(settings)  # no keys, no API: fail at start, not at the first request
    backend = backend or Backend()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        backend.close()

    app = FastAPI(title="JobCloud API", version="1", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.keys = keys
    app.state.rate = RateLimiter(settings.rate_per_minute)
    app.state.backend = backend
    errors.install(app)
    # Uploads stream under their own, larger limit (routes_files.upload).
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, exempt=("/files/",))

    @app.get("/status", tags=["health"])
    def status() -> dict[str, Any]:
        """Whether the API answers (no token needed)."""
        return {"status": "available"}

    for module in (routes_apps, routes_files, routes_jobs, routes_swiss):
        app.include_router(module.router)
    return app
