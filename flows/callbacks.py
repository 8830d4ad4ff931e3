"""A job's callback: JSON status updates PATCHed to the URL a job names (`callback_url`).

The body has the Swiss AI Center's task-update shape (`status`, and `data_out` once the job is
done) plus JobCloud's own facts (job id, application, version, entrypoint, phase, state).
Delivery happens on a background thread, in order, with retries and backoff; a receiver that is
down, answers errors or hangs never fails the job and delays it by at most `CLOSE_WAIT_S`.
"""

from __future__ import annotations

import ipaddress
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from jobcloud.blocks.errors import ParameterError

# The Swiss AI Center's task statuses a JobCloud phase maps to (its TaskStatus enum).
PHASE_STATUS: dict[str, str] = {
    "inputs-staged": "processing",
    "reused": "saving",
    "container-started": "processing",
    "container-exited": "saving",
    "outputs-uploaded": "saving",
}
# Final job states -> task status: everything but Completed is an error for the receiver.
FINAL_STATUS: dict[str, str] = {"Completed": "finished"}

# One request may take this long (connect + answer): a hanging receiver costs no more.
REQUEST_TIMEOUT_S = 2.0
# Tries per update, and the pause before each retry (seconds): 0.2, 0.5, 1.
ATTEMPTS = 4
BACKOFF_S = (0.2, 0.5, 1.0)
# The most a job waits at its end for updates still queued: the job is never held longer.
CLOSE_WAIT_S = 3.0

# Cloud metadata services live here (AWS, GCP, Azure, OpenStack): a job must not be able to
# make JobCloud read or poke them on its behalf.
BLOCKED_NETWORKS = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS's IPv6 metadata address
)
BLOCKED_HOSTS = {"metadata.google.internal", "metadata", "instance-data"}


class CallbackURLError(ParameterError):
    """A callback URL JobCloud refuses to call (not http(s), or a metadata address)."""


def _blocked_ip(text: str) -> bool:
    text = text.strip("[]")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        try:
            # Numeric spellings the resolver accepts too: 2852039166, 0xA9FEA9FE, 169.254.43518.
            ip = ipaddress.ip_address(socket.inet_aton(text))
        except (OSError, ValueError):
            return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in BLOCKED_NETWORKS)


def check_http_url(url: str, what: str = "callback_url") -> str:
    """``url`` (stripped) if JobCloud may call it, else raise `CallbackURLError` naming ``what``.

    Only http and https, with a host, and never a link-local or cloud-metadata address
    (169.254.0.0/16, fe80::/10): those answer with credentials on cloud hosts.
    """
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https"):
        raise CallbackURLError(f"{what} {url!r}: only http:// and https:// URLs are called")
    try:
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise CallbackURLError(f"{what} {url!r}: {exc}") from None
    if not host:
        raise CallbackURLError(f"{what} {url!r} names no host")
    if host.lower().rstrip(".") in BLOCKED_HOSTS or _blocked_ip(host):
        raise CallbackURLError(f"{what} {url!r} points at a link-local / cloud metadata address, which JobCloud never calls")
    return url.strip()


def check_callback_url(url: str) -> str:
    """``url`` if JobCloud may PATCH it as a job's callback, else raise `CallbackURLError`."""
    return check_http_url(url, "callback_url")


def resolves_to_blocked(host: str) -> bool:
    """True if ``host`` resolves to a link-local / metadata address (checked again at send time:
    a name can point anywhere)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False  # the request itself will fail and say so
    return any(_blocked_ip(str(info[4][0])) for info in infos)


@dataclass
class Delivery:
    """What became of one update: delivered or not, how many tries, the last error."""

    body: dict[str, Any]
    delivered: bool = False
    attempts: int = 0
    error: str | None = None
    skipped: bool = False  # superseded by a newer update while the receiver failed
    done: bool = False  # handled: delivered, given up, or skipped


@dataclass
class CallbackSender:
    """PATCHes updates to ``url`` in order on a daemon thread; `close` waits a bounded time.

    ``log(level, message)`` says what happened (the job's run logger in a job). When an update
    fails all its tries and a newer one is already queued, the newer one is sent and the older
    dropped: the receiver wants the latest status, not the history.
    """

    url: str
    log: Callable[[str, str], None]
    timeout_s: float = REQUEST_TIMEOUT_S
    attempts: int = ATTEMPTS
    backoff_s: tuple[float, ...] = BACKOFF_S
    deliveries: list[Delivery] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._queue: queue.Queue[Delivery | None] = queue.Queue()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobcloud-callback", daemon=True)
        self._thread.start()

    def send(self, body: dict[str, Any]) -> None:
        """Queue ``body``; returns at once."""
        delivery = Delivery(body=body)
        self.deliveries.append(delivery)
        self._queue.put(delivery)

    def close(self, wait_s: float = CLOSE_WAIT_S) -> bool:
        """Wait up to ``wait_s`` for queued updates; True if all were handled. What is still
        pending then is abandoned (the thread is a daemon) and logged."""
        self._queue.put(None)
        self._closing.set()  # retries stop pausing: the job is ending
        self._thread.join(wait_s)
        done = not self._thread.is_alive()
        if not done:
            pending = [d for d in self.deliveries if not d.done]
            self.log(
                "warning",
                f"callback {self.url}: gave up waiting after {wait_s:g} s; "
                f"{len(pending)} update(s) not delivered (the receiver is slow or hangs)",
            )
        return done

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=self.timeout_s, follow_redirects=False, headers={"user-agent": "JobCloud callback"}) as client:
            while True:
                delivery = self._queue.get()
                if delivery is None:
                    return
                try:
                    self._deliver(client, delivery)
                finally:
                    delivery.done = True

    def _deliver(self, client: Any, delivery: Delivery) -> None:
        host = urlsplit(self.url).hostname or ""
        if resolves_to_blocked(host):
            delivery.error = "the host resolves to a link-local / metadata address; not called"
            self.log("warning", f"callback {self.url}: {delivery.error}")
            return
        status = delivery.body.get("status")
        for attempt in range(1, self.attempts + 1):
            delivery.attempts = attempt
            try:
                response = client.patch(self.url, json=delivery.body)
                if response.status_code < 300:
                    delivery.delivered, delivery.error = True, None
                    self.log("info", f"callback {self.url}: {status} delivered (HTTP {response.status_code})")
                    return
                delivery.error = f"HTTP {response.status_code}"
            except Exception as exc:  # any transport failure: the job must go on
                delivery.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if attempt == self.attempts or (self._newer_queued() and attempt >= 2):
                break
            pause = self.backoff_s[min(attempt - 1, len(self.backoff_s) - 1)]
            # While the job is ending, pause less: close() waits a bounded time for everything
            # (a pause under way ends early when the job starts closing).
            if self._closing.is_set():
                time.sleep(pause / 4)
            else:
                self._closing.wait(pause)
        if self._newer_queued():
            delivery.skipped = True
            self.log("warning", f"callback {self.url}: {status} not delivered ({delivery.error}); a newer update follows")
        else:
            self.log("warning", f"callback {self.url}: {status} not delivered after {delivery.attempts} tries ({delivery.error})")

    def _newer_queued(self) -> bool:
        # Only a real update counts (the None that close() puts is not one).
        with self._queue.mutex:
            return any(item is not None for item in self._queue.queue)


def task_update(
    status: str,
    *,
    job_id: str,
    application: str,
    version: str,
    entrypoint: str,
    phase: str,
    details: dict[str, Any] | None = None,
    data_out: list[str] | None = None,
    state: str | None = None,
) -> dict[str, Any]:
    """The JSON body of one update: the Swiss AI Center task-update fields (`status`,
    `data_out`) and JobCloud's (job id, application, version, entrypoint, phase, state)."""
    body: dict[str, Any] = {
        "status": status,
        "job_id": job_id,
        "application": application,
        "version": version,
        "entrypoint": entrypoint,
        "phase": phase,
        "sent_at": time.time(),
    }
    if state is not None:
        body["state"] = state
    if data_out is not None:
        body["data_out"] = data_out
    if details:
        body["details"] = details
    return body
