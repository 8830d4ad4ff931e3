"""A job watches its own flow run on the server: cancel, a run ended elsewhere, a lost server.

A thread asks the server for the run's state every `JOBCLOUD_CANCEL_POLL_S` seconds (default
1) while the job runs, on every host (a worker's, in-container, `run --local`), and trips the
job's stop flag with one of three reasons:

- `cancelled`: the run is Cancelling (or Cancelled). The job's phases look at the flag:
  staging and uploading stop at the next chunk (`JobCancelled`), a running container is
  stopped, and the job ends `Cancelled` with its log so far uploaded. A worker also stops the
  run's process on a cancel; the watch makes it seconds everywhere, in-container too.
- `ended`: the server ended the run while this attempt still works on it (the zombie rule
  marked it Crashed, someone set a final state, a retry took it over: Scheduled, Pending). The
  attempt stops its container and uploads nothing, writes no manifest and proposes no state
  (`AttemptOver`): what the server decided stands, and a retry never races an old copy.
- `fenced`: the server has not answered for `JOBCLOUD_FENCE_AFTER_S` (host monotonic clock,
  so a skewed wall clock changes nothing): the host may be cut off, and the server's zombie
  rule will end the run and may retry it elsewhere. The attempt stops as for `ended`.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from jobcloud.blocks.errors import JobCloudError
from jobcloud.blocks.settings import env_name, get_settings

WATCH_ENV = env_name("watch_cancel")  # set by `run --local`: no worker watches this run

_flag: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("jobcloud_cancel", default=None)


CANCELLED, ENDED, FENCED = "cancelled", "ended", "fenced"
READ_TIMEOUT_S = 5.0  # one poll's patience: a partitioned host must not hang in a read


class JobCancelled(JobCloudError):
    """Someone cancelled the job while it staged or uploaded files."""


class AttemptOver(JobCancelled):
    """The server ended this run (or this host lost the server): the attempt stops and leaves
    the run's state and its files in the store as they are."""


class StopFlag(threading.Event):
    """A job's stop flag and why it was tripped (`CANCELLED`, `ENDED`, `FENCED`)."""

    def __init__(self) -> None:
        super().__init__()
        self.why = CANCELLED
        self.message = "the job was cancelled"

    def trip(self, why: str, message: str) -> None:
        """Set the flag with its reason; the first reason stays."""
        if not self.is_set():
            self.why, self.message = why, message
            self.set()

    @property
    def attempt_over(self) -> bool:
        """True when this attempt must leave everything as it is (ended, fenced)."""
        return self.is_set() and self.why != CANCELLED


def current_flag() -> StopFlag | None:
    """This job's stop flag (None outside a job), for threads that do not share its context."""
    return _flag.get()


def cancel_requested() -> bool:
    """True once this job must stop (cancelled, ended on the server, fenced)."""
    flag = _flag.get()
    return flag is not None and flag.is_set()


def stop_reason() -> str:
    """Why the job stops, in words for its log ("the job was cancelled")."""
    flag = _flag.get()
    return flag.message if flag is not None and flag.is_set() else "the job was cancelled"


def raise_if_cancelled() -> None:
    """Raise `JobCancelled` (`AttemptOver` when the attempt is over) if the job must stop."""
    flag = _flag.get()
    if flag is not None and flag.is_set():
        raise (AttemptOver if flag.attempt_over else JobCancelled)(flag.message)


def raise_if_attempt_over() -> None:
    """Raise `AttemptOver` if the server ended this run or this host was fenced: called before
    each upload and before the manifest, which must never land over a newer attempt's."""
    flag = _flag.get()
    if flag is not None and flag.attempt_over:
        raise AttemptOver(flag.message)


def judge(state_type: str | None, state_name: str | None) -> tuple[str, str] | None:
    """What a run's state on the server means for the attempt working on it: None (go on),
    or (reason, message)."""
    if state_type in (None, "RUNNING"):
        return None
    if state_type in ("CANCELLING", "CANCELLED"):
        return CANCELLED, "the job was cancelled"
    return ENDED, f"the server ended this run ({state_name or state_type}) while this attempt ran: it stops and uploads nothing"


def _poll(job_id: str, flag: StopFlag, stop: threading.Event, interval: float, contact: list[float]) -> None:
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    # No client retries: their backoff (up to a minute) would hide a cancel for that long once a
    # cut-off host's link returns; the next poll is the retry.
    with (
        temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0}),
        get_client(sync_client=True, httpx_settings={"timeout": httpx.Timeout(READ_TIMEOUT_S)}) as client,
    ):
        while not stop.wait(interval) and not flag.is_set():
            try:
                state = client.read_flow_run(job_id).state
            except Exception:  # noqa: BLE001 - a missed poll is retried next interval
                continue
            contact[0] = time.monotonic()
            verdict = judge(state.type.value if state else None, state.name if state else None)
            if verdict is not None:
                flag.trip(*verdict)
                return


def _fence(flag: StopFlag, stop: threading.Event, fence_after: float, contact: list[float]) -> None:
    # Its own thread: a read to an unreachable server may hang through the client's retries.
    while not stop.wait(min(1.0, fence_after / 4)) and not flag.is_set():
        if time.monotonic() - contact[0] > fence_after:
            flag.trip(
                FENCED,
                f"this host has not reached the Prefect server for {fence_after:g} s: it stops the job and uploads nothing (fenced)",
            )
            return


def confirm_run_on_server() -> None:
    """Before an infrastructure retry starts a new container: ask the server whether this run
    is still this attempt's to run. Raises `AttemptOver` (or `JobCancelled`) if not; a server
    that does not answer is the fence's to judge, not this check's."""
    flag = _flag.get()
    if flag is None:
        return
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    try:
        with get_client(sync_client=True, httpx_settings={"timeout": httpx.Timeout(READ_TIMEOUT_S)}) as client:
            state = client.read_flow_run(flow_run.id).state
    except Exception:  # noqa: BLE001 - see above
        state = None
    verdict = judge(state.type.value, state.name) if state is not None else None
    if verdict is not None:
        flag.trip(*verdict)
    raise_if_cancelled()


@contextmanager
def watch_for_cancel(job_id: str) -> Iterator[StopFlag]:
    """Within this block `cancel_requested()` tells whether the job must stop, and
    `current_flag().why` why."""
    flag = StopFlag()
    token = _flag.set(flag)
    stop = threading.Event()
    settings = get_settings()
    contact = [time.monotonic()]  # the last answer from the server, on this host's monotonic clock
    watchers = [(_poll, (job_id, flag, stop, settings.cancel_poll_s, contact), "jobcloud-run-watch")]
    if settings.fence_after_s:
        watchers.append((_fence, (flag, stop, settings.fence_after_s, contact), "jobcloud-fence"))
    for target, args, name in watchers:
        threading.Thread(target=contextvars.copy_context().run, args=(target, *args), name=name, daemon=True).start()
    try:
        yield flag
    finally:
        stop.set()
        _flag.reset(token)
