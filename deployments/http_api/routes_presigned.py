"""Presigned URLs: move a file straight between the client and an S3 or GCS job store, without
the bytes passing through the API.

- `POST /files/{key}:upload-url` → `{"url", "method": "PUT", "expires_in", "headers"}`: send the
  file's bytes as the body of one HTTP PUT to `url`, with `headers`, within `expires_in` seconds.
- `GET /files/{key}:download-url` → the same with `"method": "GET"` for an existing file.

KEY is relative to the caller's folder `users/<name>/`, as in every file route (an admin may pass
`owner`). A key that points outside that folder (`..`) or another user's folder without being
an admin is 403: a presigned URL is a credential. A local store has no presigned URLs (409: use
PUT /files/{key} and GET /files/{key}). The lifetime is JOBCLOUD_API_PRESIGN_EXPIRY_S.

These routes come before routes_files' `GET /files/{key}` (app.py): a key whose last name ends in
`:download-url` is read as this route, not as a download.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from jobcloud.blocks.errors import UnsafeKeyError
from jobcloud.blocks.keys import check_key
from jobcloud.blocks.store.presign import NoPresignedUrlsError
from jobcloud.deployments.http_api.auth import Principal, owner_for, principal
from jobcloud.deployments.http_api.errors import ApiError
from jobcloud.deployments.http_api.services import user_key

router = APIRouter(tags=["files"])


class PresignedUrlOut(BaseModel):
    """One request the client may send straight to the job store."""

    url: str = Field(description="The presigned URL.")
    method: Literal["GET", "PUT"] = Field(description="The HTTP method it allows.")
    expires_in: int = Field(description="Seconds from now during which the URL works.")
    headers: dict[str, str] = Field(default_factory=dict, description="Headers to send with the request (may be empty).")


def _outside(key: str) -> bool:
    """Whether ``key`` tries to leave the caller's folder: a '..' segment, or absolute."""
    return key.startswith(("/", "~")) or any(seg == ".." for seg in key.replace("\\", "/").split("/"))


def _own_key(who: Principal, owner: str | None, key: str) -> str:
    user = owner_for(who, owner)  # 403 for another user's folder unless an admin
    if _outside(key):
        raise ApiError(403, f"{key!r} is outside your folder", "key", "give a key relative to your folder, like data/exp1")
    try:
        check_key(key)
    except UnsafeKeyError as exc:
        if "percent-encoded" in str(exc):  # %2e%2e: a way out of the folder all the same
            raise ApiError(403, f"{key!r} is outside your folder", "key", "give a key relative to your folder, like data/exp1") from None
    return user_key(user, key)  # 400 for any other malformed key


def _presign(request: Request, full: str, method: Literal["GET", "PUT"], key: str) -> PresignedUrlOut:
    store = request.app.state.backend.store
    expires = request.app.state.settings.presign_expiry_s
    try:
        url = store.presigned_url(full, method, expires)
    except NoPresignedUrlsError as exc:
        raise ApiError(409, str(exc), None, f"use {method} /files/{key}: the API moves the bytes itself") from None
    return PresignedUrlOut(url=url.url, method=url.method, expires_in=url.expires_in, headers=url.headers)


@router.post("/files/{key:path}:upload-url", response_model=PresignedUrlOut)
def upload_url(request: Request, key: str, owner: str | None = None, who: Principal = Depends(principal)) -> PresignedUrlOut:
    """A presigned URL to upload the file KEY with one HTTP PUT of its bytes (S3 and GCS stores;
    409 for a local store: use PUT /files/KEY). The file appears whole when the PUT completes."""
    full = _own_key(who, owner, key)
    store = request.app.state.backend.store
    if not store.is_local and store.is_dir(full):
        raise ApiError(400, f"{key!r} is a folder", "key", "choose a key that is not one of your folders")
    return _presign(request, full, "PUT", key)


@router.get("/files/{key:path}:download-url", response_model=PresignedUrlOut)
def download_url(request: Request, key: str, owner: str | None = None, who: Principal = Depends(principal)) -> PresignedUrlOut:
    """A presigned URL to download the file KEY with one HTTP GET (S3 and GCS stores; 409 for a
    local store: use GET /files/KEY)."""
    full = _own_key(who, owner, key)
    store = request.app.state.backend.store
    if not store.is_local:
        store.require(full)  # 404 for no such file
        if store.is_dir(full):
            raise ApiError(400, f"{key!r} is a folder", "key", "list it with GET /files?prefix=KEY and ask for each file")
    return _presign(request, full, "GET", key)
