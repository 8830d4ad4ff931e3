"""Files under the caller's prefix `users/<name>/`: upload (streamed), list, download (streamed),
delete. Keys follow `jobcloud.blocks.keys` (relative, no '..'); an admin may pass `owner`."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from jobcloud.blocks.errors import MissingKeyError, UserError
from jobcloud.deployments.http_api.auth import Principal, owner_for, principal
from jobcloud.deployments.http_api.errors import ApiError
from jobcloud.deployments.http_api.services import user_key, user_root

router = APIRouter(tags=["files"])
CHUNK = 1024 * 1024
# Bytes of an upload handed to the writing thread at once. 1 MiB measured best here: each
# batch costs a thread hop, and in 4 MiB batches the writes of 1 GiB took 2 s instead of 0.3 s.
BATCH = 1024 * 1024


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


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"upload over {limit} bytes", "body", "split the file (JOBCLOUD_API_MAX_UPLOAD_BYTES sets the limit)")


@router.put("/files/{key:path}", response_model=Uploaded, status_code=201)
async def upload(request: Request, key: str, owner: str | None = None, who: Principal = Depends(principal)) -> Uploaded:
    """Upload the raw request body as the file KEY. The body streams to disk (never held in
    memory) and enters the job store whole, under its final name, only once complete: an
    upload that is cut off or over the limit leaves nothing behind. On a local store it is
    written inside the store and renamed into place (no second copy); on S3/GCS it is spooled,
    then uploaded (or ask for a presigned URL: POST /files/KEY:upload-url)."""
    user = owner_for(who, owner)
    full = user_key(user, key)
    settings = request.app.state.settings
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    size_hint = int(declared) if declared and declared.isdigit() else None
    if size_hint is not None and size_hint > limit:
        raise _too_large(limit)
    store = _backend(request).store
    try:
        incoming = await run_in_threadpool(store.open_write, full, settings.upload_dir, size_hint)
    except UserError as exc:  # e.g. a file where the key needs a folder
        raise ApiError(400, str(exc), "key", "choose a key that is not inside one of your files") from None
    writing: asyncio.Future[None] | None = None
    try:
        # Pieces are gathered into batches that a worker thread hashes and writes while this
        # loop receives the next batch: the network, the hash and the disk work at once.
        batch: list[bytes] = []
        batched = size = 0
        try:
            async for chunk in request.stream():
                if not chunk:
                    continue
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                batch.append(chunk)
                batched += len(chunk)
                if batched >= BATCH:
                    if writing is not None:
                        await writing
                    writing = asyncio.ensure_future(run_in_threadpool(incoming.write, batch))
                    batch, batched = [], 0
        except ClientDisconnect:
            raise ApiError(400, "the upload was cut off", "body", "send it again") from None
        if writing is not None:
            await writing
        if batch:
            await run_in_threadpool(incoming.write, batch)
        try:
            record = await run_in_threadpool(incoming.commit)
        except UserError as exc:  # a folder of that name appeared meanwhile
            raise ApiError(400, str(exc), "key", "choose a key that is not one of your folders") from None
    finally:
        if writing is not None:
            await asyncio.wait([writing])  # never close the file under a write in flight
            if not writing.cancelled():
                writing.exception()  # raised above already, or moot next to the error that got here
        await run_in_threadpool(incoming.discard)  # a no-op after commit
    if record.sha256 != incoming.sha256 or record.size != size:
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


class OpenFileResponse(Response):
    """A local store's file, already opened (by `JobStore.open_read`, never through a link),
    sent in large pieces read on a worker thread, each read overlapping the send of the piece
    before. Starlette's FileResponse would open the file again by its path (a link swapped in
    meanwhile would be followed) and read 64 KiB at a time."""

    chunk_size = 4 * 1024 * 1024

    def __init__(self, fh: Any, size: int, headers: dict[str, str]) -> None:
        super().__init__(media_type="application/octet-stream", headers={**headers, "content-length": str(size)})
        self.fh = fh
        self.size = size

    def _read(self, offset: int) -> bytes:
        return os.pread(self.fh.fileno(), min(self.chunk_size, self.size - offset), offset)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        gone = asyncio.Event()

        async def watch() -> None:  # a client that hangs up ends the sending
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        ahead: asyncio.Future[bytes] | None = None
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if scope.get("method") == "HEAD" or self.size == 0:
                await send({"type": "http.response.body", "body": b""})
                return
            with contextlib.suppress(OSError):
                os.posix_fadvise(self.fh.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            offset = 0
            ahead = asyncio.ensure_future(run_in_threadpool(self._read, 0))
            while not gone.is_set():
                data = await ahead
                if not data:
                    raise OSError(f"the file shrank while it was sent ({offset} of {self.size} bytes)")
                offset += len(data)
                more = offset < self.size
                if more:
                    ahead = asyncio.ensure_future(run_in_threadpool(self._read, offset))
                await send({"type": "http.response.body", "body": data, "more_body": more})
                if not more:
                    return
        finally:
            watcher.cancel()
            if ahead is not None and not ahead.done():
                await asyncio.wait([ahead])  # never close the file under a read in flight
            self.fh.close()


def attachment(name: str) -> str:
    """A Content-Disposition value for ``name`` (RFC 6266): header values are Latin-1, so a
    name outside ASCII goes as a percent-encoded UTF-8 `filename*` beside an ASCII fallback."""
    plain = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    if plain == name:
        return f'attachment; filename="{name}"'
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


def stream_file(store: Any, key: str, shown: str) -> Response:
    """A streamed download of the store's file ``key`` (400 for a folder)."""
    if store.is_dir(key):
        raise ApiError(400, f"{shown!r} is a folder", "key", "list it with GET /files?prefix=KEY and download each file")
    fh = store.open_read(key)
    headers = {"content-disposition": attachment(shown.rsplit("/", 1)[-1])}
    if store.is_local:
        return OpenFileResponse(fh, os.fstat(fh.fileno()).st_size, headers)

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
    return StreamingResponse(chunks(), media_type="application/octet-stream", headers={"content-length": str(size), **headers})


@router.get("/files/{key:path}", response_class=StreamingResponse, responses={200: {"content": {"application/octet-stream": {}}}})
def download(request: Request, key: str, owner: str | None = None, who: Principal = Depends(principal)) -> Response:
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
