"""One way for a test to wait for something that happens in another thread or process.

Tests wait for servers to answer, jobs to reach a state, processes to go away. Each wait polls a
predicate until it returns something truthy or a timeout passes; on a timeout it fails with what
it waited for and the last value it saw, which is what a reader of a red test needs first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.2,
    message: str | Callable[[], str] = "the condition",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns a truthy value; return it.

    The predicate is always called at least once, and once more after ``timeout`` has passed, so
    a slow machine gets its last chance. Exceptions of the types in ``ignore`` count as "not yet"
    (e.g. a connection refused by a server that is still starting); any other exception, and an
    ``AssertionError`` raised inside the predicate to give up early, goes straight to the test.

    Raises AssertionError after ``timeout`` seconds, naming ``message`` (a callable is called
    only then, so it may read a log tail) and the last value or ignored exception seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        expired = time.monotonic() >= deadline
        last: object
        try:
            value = predicate()
        except ignore as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if expired:
            what = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value: {last!r}")
        # Sleep no further than the deadline, so that the last try falls close to it.
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
