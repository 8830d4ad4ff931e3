"""A tiny real HTTP server for tests that read URLs: each path answers a file, a redirect, an
error, or a body streamed without a length; started on a free port of ``host`` and stopped by
the test."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Page:
    """One answer: ``body`` with ``status``; ``location`` makes it a redirect; ``chunked``
    sends the body with no Content-Length (the reader cannot know its size beforehand)."""

    body: bytes = b""
    status: int = 200
    location: str | None = None
    chunked: bool = False


@dataclass
class FileServer:
    pages: dict[str, Page] = field(default_factory=dict)
    host: str = "127.0.0.1"
    hits: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                server.hits.append(self.path)
                page = server.pages.get(self.path.split("?", 1)[0], Page(b"not found", 404))
                self.send_response(page.status)
                if page.location:
                    self.send_header("Location", page.location)
                if page.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for start in range(0, len(page.body), 65536):
                        part = page.body[start : start + 65536]
                        self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_header("Content-Length", str(len(page.body)))
                self.end_headers()
                self.wfile.write(page.body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
