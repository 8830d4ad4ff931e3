"""`GET /jobs/{id}` at the speed of memory: each job's answer, kept ready as JSON bytes.

A job that has ended (Completed, Failed, Cancelled, Crashed, TimedOut...) no longer changes: its
answer is kept for `final_s` seconds (a run restarted from Prefect's UI is seen after at most
that long). A queued or running job's answer is kept for `live_s` seconds (default 1): however
many clients poll it, this process asks Prefect about it at most once per `live_s`. Requests
that find no fresh answer while one is being fetched wait for that fetch instead of starting
their own. The owner is kept beside the answer, so every request is still checked against it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from fastapi.concurrency import run_in_threadpool

MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class JobAnswer:
    """One job's answer: the response body, its owner, and until when it may be served."""

    body: bytes
    owner: str | None
    final: bool
    expires: float


Fetch = Callable[[str], tuple[bytes, str | None, bool]]
"""Asks Prefect (and the store) about a job: (JSON body, owner, ended?). Runs on a worker
thread; raises for an unknown job."""


class JobCache:
    """The answers of one API process (an LRU of at most ``max_entries`` jobs)."""

    def __init__(self, fetch: Fetch, live_s: float = 1.0, final_s: float = 300.0, max_entries: int = MAX_ENTRIES) -> None:
        self.fetch = fetch
        self.live_s = live_s
        self.final_s = final_s
        self.max_entries = max_entries
        self._answers: OrderedDict[str, JobAnswer] = OrderedDict()
        self._fetching: dict[str, asyncio.Task[JobAnswer]] = {}

    async def get(self, job_id: str) -> JobAnswer:
        """The answer for ``job_id``, fetched only when none is fresh."""
        try:
            key = str(UUID(job_id))  # one entry per job, whatever case or form the id came in
        except ValueError:
            key = job_id  # the fetch refuses it (404) without asking Prefect
        answer = self._answers.get(key)
        if answer is not None:
            if time.monotonic() < answer.expires:
                self._answers.move_to_end(key)
                return answer
            del self._answers[key]
        task = self._fetching.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(key))
            self._fetching[key] = task
            task.add_done_callback(lambda t: (self._fetching.pop(key, None), t.cancelled() or t.exception()))
        # Shielded: a client that goes away does not cancel the fetch others wait for.
        return await asyncio.shield(task)

    async def _fetch(self, key: str) -> JobAnswer:
        body, owner, final = await run_in_threadpool(self.fetch, key)
        keep = self.final_s if final else self.live_s
        answer = JobAnswer(body, owner, final, time.monotonic() + keep)
        if keep > 0:
            self._answers[key] = answer
            self._answers.move_to_end(key)
            while len(self._answers) > self.max_entries:
                self._answers.popitem(last=False)
        return answer

    def forget(self, job_id: str) -> None:
        """Drop what is kept of ``job_id`` (e.g. after this process changed its state)."""
        try:
            self._answers.pop(str(UUID(job_id)), None)
        except ValueError:
            pass
