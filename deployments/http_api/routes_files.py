"""Files under the caller's prefix `users/<name>/`: upload (streamed), list, download (streamed),
delete. Keys follow `jobcloud.blocks.keys` (relative, no '..'); an admin may pass `owner`."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from jobcloud.blocks.errors import MissingKeyError, UserError
from jobcloud.deployments.http_api.auth import Principal, owner_for, principal
from jobcloud.deployments.http_api.errors import ApiError
from jobcloud.deployments.http_api.services import user_key, user_root

router = APIRouter(tags=["files"])
CHUNK = 1024 * 1024


class Uploaded(BaseModel):
    key: str
    size: int
    sha256: str


class Entry(BaseModel):
    key: str
    size: int
    type: str


class Listing(BaseModel):
    owner: str
    prefix: str
    entries: list[Entry]


def _backend(request: Request) -> Any:
    return request.app.state.backend


def _relative(user: str, key: str) -> str:
    return key[len(user_root(user)) + 1 :]


@router.put("/files/{key:path}", response_model=Uploaded, status_code=201)
async def upload(request: Request, key: str, owner: str | None = None, who: Principal = Depends(principal)) -> Uploaded:
    """Upload the raw request body as the file KEY. The body streams to a spool file (never
    held in memory) and enters the job store whole, under its final name, only once complete:
    an upload that is cut off or over the limit leaves nothing behind."""
    user = owner_for(who, owner)
    full = user_key(user, key)
    settings = request.app.state.settings
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"upload over {limit} bytes", "body", "split the file (JOBCLOUD_API_MAX_UPLOAD_BYTES sets the limit)")
    store = _backend(request).store
    spool_dir = settings.upload_dir
    if spool_dir is not None:
        Path(spool_dir).mkdir(parents=True, exist_ok=True)
    fd, spool = tempfile.mkstemp(prefix="jobcloud-upload-", dir=spool_dir)
    try:
        size, digest = 0, hashlib.sha256()
        with os.fdopen(fd, "wb") as fh:
            try:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise ApiError(
                            413, f"upload over {limit} bytes", "body", "split the file (JOBCLOUD_API_MAX_UPLOAD_BYTES sets the limit)"
                        )
                    digest.update(chunk)
                    fh.write(chunk)
            except ClientDisconnect:
                raise ApiError(400, "the upload was cut off", "body", "send it again") from None
        try:
            record = await run_in_threadpool(store.upload_file, Path(spool), full)
        except UserError as exc:  # e.g. a file where the key needs a folder
            raise ApiError(400, str(exc), "key", "choose a key that is not inside one of your files") from None
    finally:
        os.unlink(spool)
    if record.sha256 != digest.hexdigest() or record.size != size:
        # The store hashed what it wrote; a difference means the spool file changed under us.
        await run_in_threadpool(store.remove, full)
        raise ApiError(500, "the stored file does not match the upload; it was removed", "body", "send it again")
    return Uploaded(key=_relative(user, record.key), size=record.size, sha256=record.sha256)


@router.get("/files", response_model=Listing)
def list_files(
    request: Request,
    prefix: str = Query("", description="List under this key (relative to your folder)."),
    recursive: bool = Query(False, description="Every file below, not only the first level."),
    owner: str | None = None,
    who: Principal = Depends(principal),
) -> Listing:
    """The caller's files and folders under PREFIX."""
    user = owner_for(who, owner)
    store = _backend(request).store
    root = user_key(user, prefix, "prefix") if prefix else user_root(user)
    try:
        entries = store.list(root, recursive=recursive)
    except MissingKeyError:
        if prefix:
            raise ApiError(404, f"no such key {prefix!r}", "prefix", "list your files with GET /files") from None
        entries = []  # a user with no upload yet has no folder yet
    return Listing(
        owner=user,
        prefix=prefix,
        entries=[Entry(key=_relative(user, e.key), size=e.size, type=e.type) for e in entries],
    )


def stream_file(store: Any, key: str, shown: str) -> StreamingResponse:
    """A streamed download of the store's file ``key`` (400 for a folder)."""
    if store.is_dir(key):
        raise ApiError(400, f"{shown!r} is a folder", "key", "list it with GET /files?prefix=KEY and download each file")
    fh = store.open_read(key)

    def chunks() -> Iterator[bytes]:
        # A sync generator: Starlette iterates it on a worker thread, so reads never block the loop.
        try:
            while True:
                data = fh.read(CHUNK)
                if not data:
                    return
                yield data
        finally:
            fh.close()

    size = store.files(key)[0][1]
    name = shown.rsplit("/", 1)[-1].replace('"', "")
    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers={"content-length": str(size), "content-disposition": f'attachment; filename="{name}"'},
    )


@router.get("/files/{key:path}", response_class=StreamingResponse, responses={200: {"content": {"application/octet-stream": {}}}})
def download(request: Request, key: str, owner: str | None = None, who: Principal = Depends(principal)) -> StreamingResponse:
    """Download the file KEY, streamed."""
    user = owner_for(who, owner)
    return stream_file(_backend(request).store, user_key(user, key), key)


@router.delete("/files/{key:path}")
def delete(
    request: Request, key: str, recursive: bool = False, owner: str | None = None, who: Principal = Depends(principal)
) -> dict[str, Any]:
    """Delete the file KEY (a folder needs `recursive=true`)."""
    user = owner_for(who, owner)
    full = user_key(user, key)
    store = _backend(request).store
    if store.is_dir(full) and not recursive:
        raise ApiError(400, f"{key!r} is a folder", "recursive", "pass recursive=true to delete it and all it holds")
    removed = store.remove(full, recursive=recursive)
    return {"key": key, "removed": removed}
