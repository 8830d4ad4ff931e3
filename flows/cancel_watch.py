"""Cancelling a job whose flow runs in a process no worker watches (`jobcloud run --local`).

A worker cancels its runs itself: it sees the run go Cancelling and stops the run's process.
A local run has no worker, so the job watches its own run: a thread asks the server for the
run's state every `JOBCLOUD_CANCEL_POLL_S` seconds (default 1) and, once it is Cancelling,
sets the job's cancel flag. The job's phases look at that flag: staging and uploading stop at
the next chunk (`JobCancelled`), a running container is stopped, and the job ends `Cancelled`
with its log so far uploaded.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from jobcloud.blocks.errors import JobCloudError
from jobcloud.blocks.settings import env_name, get_settings

WATCH_ENV = env_name("watch_cancel")  # set by `run --local`: no worker watches this run

_flag: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("jobcloud_cancel", default=None)


class JobCancelled(JobCloudError):
    """Someone cancelled the job while it staged or uploaded files."""


def current_flag() -> threading.Event | None:
    """This job's cancel flag (None outside a job), for threads that do not share its context."""
    return _flag.get()


def cancel_requested() -> bool:
    """True once this job's run has been cancelled."""
    flag = _flag.get()
    return flag is not None and flag.is_set()


def raise_if_cancelled() -> None:
    """Raise `JobCancelled` if this job's run has been cancelled."""
    if cancel_requested():
        raise JobCancelled("the job was cancelled")


def _poll(job_id: str, flag: threading.Event, stop: threading.Event, interval: float) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        while not stop.wait(interval):
            try:
                state = client.read_flow_run(job_id).state
            except Exception:  # noqa: BLE001 - a missed poll is retried next interval
                continue
            if state is not None and state.type in (StateType.CANCELLING, StateType.CANCELLED):
                flag.set()
                return


@contextmanager
def watch_for_cancel(job_id: str) -> Iterator[threading.Event]:
    """Within this block `cancel_requested()` tells whether the run was cancelled.

    The server is polled only where no worker watches the run (`JOBCLOUD_WATCH_CANCEL=1`).
    """
    flag = threading.Event()
    token = _flag.set(flag)
    stop = threading.Event()
    thread = None
    settings = get_settings()
    if settings.watch_cancel:
        interval = settings.cancel_poll_s
        thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(_poll, job_id, flag, stop, interval),
            name="jobcloud-cancel-watch",
            daemon=True,
        )
        thread.start()
    try:
        yield flag
    finally:
        stop.set()
        _flag.reset(token)
