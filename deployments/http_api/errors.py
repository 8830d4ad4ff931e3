"""One JSON error shape for every refusal: `{"error": {"status", "field", "message", "fix"}}`.

User mistakes (`jobcloud.blocks.errors.UserError` and its subclasses, FastAPI's validation errors) become
4xx answers that name the field and the fix; a platform failure (Prefect or the store down)
becomes 503. A user's input never produces a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobcloud.blocks.errors import (
    JobCloudError,
    MissingKeyError,
    ParameterError,
    StorageError,
    UnknownEntrypointError,
    UnsafeKeyError,
    UserError,
)
from jobcloud.deployments.jobs.show import UnknownJobError
from jobcloud.flows.callbacks import CallbackURLError

log = logging.getLogger("jobcloud.api")


class ApiError(Exception):
    """A refusal with its HTTP status, the field at fault and how to fix it."""

    def __init__(
        self, status: int, message: str, field: str | None = None, fix: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.fix = fix
        self.headers = headers


def body(status: int, message: str, field: str | None = None, fix: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"status": status, "field": field, "message": message, "fix": fix, **extra}}


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(body(exc.status, exc.message, exc.field, exc.fix), status_code=exc.status, headers=exc.headers)


# Which request field a parameter error is about, from the words its message starts with.
_FIELD_WORDS = (
    ("environment variable", "env"),
    ("secret", "secrets"),
    ("memory", "hardware.memory"),
    ("callback_url", "callback_url"),
    ("missing required input", None),
)


def field_of(exc: UserError) -> str | None:
    """The request field a `UserError` from job validation is about (None when unclear)."""
    text = str(exc)
    if isinstance(exc, CallbackURLError):
        return "callback_url"
    for kind in ("config_id", "data_ids", "artifact_ids"):
        if f"takes no {kind}" in text or (text.startswith("missing required input") and kind in text):
            return kind
    for words, field in _FIELD_WORDS:
        if text.startswith(words):
            return field
    return None


def from_user_error(exc: UserError, field: str | None = None) -> ApiError:
    """The HTTP answer to a user mistake."""
    if isinstance(exc, (UnknownJobError, UnknownEntrypointError)):
        return ApiError(404, str(exc), field, "list what exists with GET /jobs or GET /applications")
    if isinstance(exc, MissingKeyError):
        return ApiError(404, f"no such key {exc.key!r}", field or "key", "upload it first (PUT /files/KEY) or list yours with GET /files")
    if isinstance(exc, UnsafeKeyError):
        return ApiError(400, str(exc), field or "key", "give a relative path like data/exp1")
    if isinstance(exc, ParameterError):
        return ApiError(400, str(exc), field or field_of(exc), "see GET /applications/APP/versions/VERSION for the entrypoint's parameters")
    return ApiError(400, str(exc), field, None)


def _validation_field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(loc[0] if loc else "body")


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into the JSON shape above."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(UserError)
    async def _user(_: Request, exc: UserError) -> JSONResponse:
        return error_response(from_user_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            field = _validation_field(tuple(err.get("loc", ())))
            if err.get("type") == "json_invalid":
                field = "body"
            problems.append({"field": field, "message": err.get("msg", "invalid")})
        first = problems[0] if problems else {"field": "body", "message": "invalid request"}
        fix = (
            "send a valid JSON object (Content-Type: application/json)"
            if first["field"] == "body"
            else "correct the field; GET /openapi.json has the request schema"
        )
        return JSONResponse(body(422, f"{first['field']}: {first['message']}", first["field"], fix, problems=problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(body(exc.status_code, str(exc.detail)), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(JobCloudError)
    async def _platform(_: Request, exc: JobCloudError) -> JSONResponse:
        # Not the user's fault: the Prefect server or the job store is unreachable or failed.
        log.warning("platform error: %s", exc)
        what = "the job store" if isinstance(exc, StorageError) else "the platform"
        return JSONResponse(body(503, f"{what} failed: {exc}", None, "try again later; tell the operator if it lasts"), status_code=503)
