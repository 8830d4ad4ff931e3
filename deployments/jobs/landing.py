"""Landing a submission on a busy Prefect server: retry what the server refuses for load.

Many clients submitting at once make a SQLite Prefect server answer `503 Service Unavailable`
(its database is locked by another writer; in WAL mode a write that finds a newer snapshot
fails at once), and a busy PostgreSQL server or a proxy before it answers 503, 502, 429 or lets
a request time out. Prefect's client retries such answers itself (`PREFECT_CLIENT_MAX_RETRIES`,
default 5, after 2, 4, 8, 16, 32 s, ±20 %), but clients that collided once retry nearly in step
and collide again, and when those retries run out the job is lost with a traceback. `land` is a
second, outer loop: it sleeps a random share of a doubling delay ("full jitter", which spreads
the clients apart) and tries again until `JOBCLOUD_SUBMIT_PATIENCE_S` is spent, then raises one
`SubmitRefusedError` (`jobcloud` prints one line and exits 1).

A create whose answer was lost (a timeout, a reset connection) may have landed; the caller
gives every attempt of one submission the same `idempotency_key` (`new_idempotency_key`), so
the server returns the run it made instead of making a second one.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from jobcloud.blocks.errors import JobCloudError
from jobcloud.blocks.settings import env_name

T = TypeVar("T")
log = logging.getLogger("jobcloud.submit")

# Answers that mean "busy now, ask again": request timeout, too many requests, and a gateway
# or server that cannot serve right now. A 500 is not here: it is a fault, not load.
LOAD_STATUSES = frozenset({408, 425, 429, 502, 503, 504})
FIRST_DELAY_S = 0.5  # the first wait's upper bound; doubled each time...
MAX_DELAY_S = 15.0  # ...up to this, so a long outage is asked about every few seconds


class SubmitRefusedError(JobCloudError):
    """The Prefect server refused a submission for load until the patience was spent."""

    def __init__(self, api_url: str, attempts: int, elapsed_s: float, patience_s: float, last: str, uncertain: bool) -> None:
        self.api_url = api_url
        self.attempts = attempts
        self.last = last
        # A request whose answer was lost may have created the run (with the submission's
        # idempotency key, never twice): the message says so rather than "nothing was made".
        maybe = "; a request that got no answer may still have created it" if uncertain else ""
        super().__init__(
            f"the Prefect server at {api_url} is too busy: it refused the job {attempts} time{'s' * (attempts != 1)} in "
            f"{elapsed_s:.0f} s (last: {last}){maybe}; try again later or raise "
            f"{env_name('submit_patience_s')} (now {patience_s:g} s)"
        )


def new_idempotency_key() -> str:
    """A key for one submission: made once, sent with every attempt of it."""
    return f"jobcloud-submit-{uuid.uuid4()}"


def load_refusal(exc: BaseException) -> tuple[str, bool] | None:
    """(what happened, whether the request may have landed) if ``exc`` is the server refusing
    for load or a connection lost to it; None for anything else (a 404, a bad request, ours)."""
    # httpx is imported here, not at module level: Prefect brings it, and the API must be fixed
    # before Prefect is imported (local_server.ensure_api).
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):  # Prefect's PrefectHTTPStatusError is one
        code = exc.response.status_code
        if code in LOAD_STATUSES:
            return f"{code} {exc.response.reason_phrase}".strip(), False
        return None
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return f"{type(exc).__name__}: {exc}".rstrip(": "), False  # never reached the server
    if isinstance(exc, httpx.TransportError):  # read/write timeouts, resets, protocol errors
        return f"{type(exc).__name__}: {exc}".rstrip(": "), True
    return None


def delays(rng: Callable[[], float] = random.random) -> Callable[[int], float]:
    """The wait before retry ``n`` (1, 2, ...): a random share of min(MAX, FIRST * 2**(n-1))."""

    def delay(n: int) -> float:
        return rng() * min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** (n - 1))

    return delay


def land(
    attempt: Callable[[], T],
    api_url: str,
    patience_s: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
) -> T:
    """``attempt()``'s result, calling it again while the server refuses for load.

    Gives up with `SubmitRefusedError` when the next wait would end past ``patience_s`` after
    the first try (a try itself may take longer: the Prefect client's own retries run inside
    it). Anything that is not a load refusal propagates at once. Each retry is logged (INFO,
    logger `jobcloud.submit`).
    """
    delay = delays(rng)
    started = clock()
    failures = 0
    uncertain = False
    while True:
        try:
            return attempt()
        except Exception as exc:
            refusal = load_refusal(exc)
            if refusal is None:
                raise
            what, maybe_landed = refusal
            failures += 1
            uncertain = uncertain or maybe_landed
            wait = delay(failures)
            elapsed = clock() - started
            if elapsed + wait > patience_s:
                raise SubmitRefusedError(api_url, failures, elapsed, patience_s, what, uncertain) from exc
            log.info("%s refused a submission (%s); try %d in %.1f s", api_url, what, failures + 1, wait)
            sleep(wait)
