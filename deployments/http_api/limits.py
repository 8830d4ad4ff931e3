"""The API's limits: the request-body limit, the per-user rate limit, and the lock around the
per-user active-jobs bound. The last two hold across every API process that shares one state
folder (`jobcloud api serve --workers N`, or several servers on one host):

- The body limit is plain ASGI middleware: a body over the limit is answered 413 before a route
  sees it, whether it comes with Content-Length or chunked. File uploads have their own, larger
  limit, checked while they stream (routes_files).
- The rate limit (`SharedRateLimiter`) keeps, per user, the times of the last N requests (N =
  requests allowed per minute) in a ring in a SQLite file (WAL, one short write transaction per
  request): a request is allowed when the oldest of those N is over 60 s old. That is exactly
  "at most N in any sliding 60 s window", across processes, in O(1) per request. SQLite rather
  than a lock file: the counts must live somewhere all processes read, and SQLite gives the
  atomic read-check-write and crash safety without any code of ours.
- The active-jobs bound counts a user's queued and running jobs on Prefect, then submits: the
  count and the submit must not interleave with another process's. `SubmitLock` is an exclusive
  `flock` on a file in the same folder (held only for that count-then-submit, and released by
  the kernel if a process dies): simpler than a table, and the lock is what is needed, not data.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
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


# -- limits shared by API processes ----------------------------------------------------------------

WINDOW_S = 60.0


class SharedRateLimiter:
    """At most ``per_minute`` requests per user in any sliding 60 s window, counted in the SQLite
    file ``path`` that every API process of a deployment shares."""

    def __init__(self, path: Path, per_minute: int) -> None:
        self.path = Path(path)
        self.per_minute = per_minute
        # One connection per process, used by one thread at a time: the threads of a process
        # queue on this lock, not on SQLite's (whose busy wait sleeps a millisecond or more).
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        """The connection (the file and its tables on first use, not when the app is built)."""
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are opened (BEGIN IMMEDIATE) and closed by hand.
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, consistent always
            db.execute("CREATE TABLE IF NOT EXISTS rate_head (user TEXT PRIMARY KEY, size INTEGER NOT NULL, head INTEGER NOT NULL)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS rate_ring (user TEXT NOT NULL, slot INTEGER NOT NULL, t REAL NOT NULL, PRIMARY KEY (user, slot))"
            )
            self._db = db
        return self._db

    def hit(self, user: str) -> float | None:
        """Count one request; None if allowed, else the seconds until the next one is."""
        with self._lock:
            return self._hit(self._connect(), user)

    def _hit(self, db: sqlite3.Connection, user: str) -> float | None:
        now = time.time()  # wall clock: the processes share it, not their monotonic clocks
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT size, head FROM rate_head WHERE user = ?", (user,)).fetchone()
            if row is None or row[0] != self.per_minute:
                # A new user, or the limit changed: start a fresh ring.
                db.execute("DELETE FROM rate_ring WHERE user = ?", (user,))
                head = 0
            else:
                head = row[1]
            oldest = db.execute("SELECT t FROM rate_ring WHERE user = ? AND slot = ?", (user, head)).fetchone()
            if oldest is not None and now - oldest[0] < WINDOW_S:
                db.execute("COMMIT")
                return WINDOW_S - (now - oldest[0])
            db.execute("INSERT OR REPLACE INTO rate_ring (user, slot, t) VALUES (?, ?, ?)", (user, head, now))
            db.execute(
                "INSERT OR REPLACE INTO rate_head (user, size, head) VALUES (?, ?, ?)",
                (user, self.per_minute, (head + 1) % self.per_minute),
            )
            db.execute("COMMIT")
            return None
        except BaseException:
            db.execute("ROLLBACK")
            raise


class SubmitLock:
    """An exclusive lock across threads and processes: `flock` on ``path`` (each holder opens
    the file itself, so threads of one process exclude each other too)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._held = threading.local()

    def __enter__(self) -> SubmitLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._held.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        fd = self._held.fd
        self._held.fd = None
        os.close(fd)  # closing the last descriptor of the open file releases the lock
