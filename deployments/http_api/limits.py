"""The request-body limit, as plain ASGI middleware: a body over the limit is answered 413
before a route sees it, whether it comes with Content-Length or chunked. File uploads have
their own, larger limit, checked while they stream (routes_files)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException

from jobcloud.deployments.http_api.errors import body

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _TooLarge(HTTPException):
    # An HTTPException: FastAPI turns any other error while it reads a body into a 400.
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes; send less (JOBCLOUD_API_MAX_BODY_BYTES sets this limit)")


class BodyLimit:
    """Refuse bodies over ``limit`` bytes except on paths starting with one of ``exempt``
    (methods PUT/POST there stream to disk under their own limit)."""

    def __init__(self, app: Any, limit: int, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting, tracking)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        payload = json.dumps(
            body(
                413,
                f"request body over {self.limit} bytes",
                "body",
                "send less; files go through PUT /files/KEY (JOBCLOUD_API_MAX_BODY_BYTES sets this limit)",
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})
