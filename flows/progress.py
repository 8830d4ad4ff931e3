"""Progress of long transfers as a Prefect progress artifact (shown on the flow run page)."""

from __future__ import annotations

import time

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from jobcloud.flows.cancel_watch import JobCancelled, current_flag

# Below this a transfer is over before anyone looks; no artifact is made.
MIN_BYTES = 64 * 1024 * 1024
EVERY_S = 1.0


class TransferProgress:
    """Counts bytes and updates a progress artifact at most once a second.

    Also where a cancelled job's transfer stops: `advance` raises `JobCancelled` once the
    job's run is cancelled (transfers call it from their own threads, so the flag is taken
    here, where the job's context is).
    """

    def __init__(self, description: str, total: int) -> None:
        self._cancel = current_flag()
        self.total = total
        self.done_bytes = 0
        self._last = 0.0
        self._id = None
        if total >= MIN_BYTES:
            self._id = create_progress_artifact(progress=0.0, description=description)

    def advance(self, n: int) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise JobCancelled("the job was cancelled")
        self.done_bytes += n
        if self._id is None:
            return
        now = time.monotonic()
        if now - self._last >= EVERY_S:
            self._last = now
            update_progress_artifact(self._id, progress=100.0 * self.done_bytes / max(self.total, 1))

    def done(self) -> None:
        if self._id is not None:
            update_progress_artifact(self._id, progress=100.0)
