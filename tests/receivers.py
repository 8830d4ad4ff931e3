"""Real local receivers for callbacks and notifications: an HTTP server (that answers, answers
500, or hangs) and an SMTP server (aiosmtpd). Each listens on 127.0.0.1 on a port of its own
below 55536 and records what it got, with the time it arrived."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from tests.waiting import wait_until


def free_port() -> int:
    """A free TCP port on 127.0.0.1 in 20000..55000 (never the kernel's high ones)."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def closed_port() -> int:
    """A port on which nothing listens (a receiver that is down)."""
    return free_port()


@dataclass
class Request:
    """One request the HTTP receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when it arrived

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """A threaded HTTP server: ``mode`` `ok` (204), `error` (500) or `hang` (never answers
    until stopped)."""

    mode: Literal["ok", "error", "hang"] = "ok"
    port: int = field(default_factory=free_port)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                receiver.requests.append(
                    Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                )
                if receiver.mode == "hang":
                    receiver._release.wait(120)
                    return
                self.send_response(204 if receiver.mode == "ok" else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_PATCH = do_POST = do_PUT = do_GET = _any

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/tasks/42"

    def wait_for(self, count: int, timeout: float = 30) -> list[Request]:
        """The requests once at least ``count`` arrived (AssertionError after ``timeout``)."""
        wait_until(
            lambda: len(self.requests) >= count,
            timeout,
            interval=0.05,
            message=lambda: f"{count} requests ({len(self.requests)} arrived)",
        )
        return list(self.requests)

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Mail:
    """One message the SMTP receiver got."""

    mail_from: str
    rcpt_tos: list[str]
    content: str  # headers, a blank line, the decoded body
    at: float


class SmtpReceiver:
    """aiosmtpd on 127.0.0.1: accepts every message (``refuse``: answers 554 to each)."""

    def __init__(self, refuse: bool = False) -> None:
        from aiosmtpd.controller import Controller

        self.mails: list[Mail] = []
        self.refuse = refuse
        self.port = free_port()
        receiver = self

        class Handler:
            async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
                if receiver.refuse:
                    return "554 5.7.1 relay refused"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                import email

                # Headers as sent, the body decoded (Apprise sends quoted-printable).
                message = email.message_from_bytes(envelope.content)
                body = message.get_payload(decode=True) or b""
                headers = "".join(f"{k}: {v}\n" for k, v in message.items())
                content = headers + "\n" + body.decode("utf-8", "replace").replace("\r\n", "\n")
                receiver.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), content, time.time()))
                return "250 OK"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def wait_for(self, count: int, timeout: float = 30) -> list[Mail]:
        """The messages once at least ``count`` arrived."""
        wait_until(
            lambda: len(self.mails) >= count,
            timeout,
            interval=0.05,
            message=lambda: f"{count} mails ({len(self.mails)} arrived)",
        )
        return list(self.mails)

    def stop(self) -> None:
        self._controller.stop()
