"""What both runners share: how a job's command ended, and turning output bytes into lines.

A job's command runs in one of two ways (`jobcloud.blocks.settings.JobCloudSettings.runner`): in the
application's container beside the flow (`jobcloud.flows.container_run`, host mode) or as a subprocess
of a flow that itself runs inside the application's image (`jobcloud.flows.process_run`, in-container
mode). Both end in a `RunOutcome`; everything else about a job is decided once, in `jobcloud.flows.job`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

TAIL_LINES = 20
CANCEL_GRACE_S = 1  # a cancelled job is stopped promptly (the goal is Cancelled within 5 s)


@dataclass
class RunOutcome:
    """How the job's command ended."""

    exit_code: int | None
    timed_out: bool
    tail: list[str] = field(default_factory=list)
    started_at: float = 0.0
    ended_at: float = 0.0
    container_id: str = ""  # host mode: the container's id; in-container mode: empty
    cancelled: bool = False
    image_id: str = ""  # the id of the image that ran, where the runner knows it

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.cancelled


class LineSplitter:
    """Turns chunks of bytes into whole text lines (the last, unterminated one on `close`)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self.buf = b""

    def feed(self, chunk: bytes) -> None:
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            self.emit(line.rstrip(b"\r").decode("utf-8", errors="replace"))

    def close(self) -> None:
        if self.buf:
            self.emit(self.buf.decode("utf-8", errors="replace"))
            self.buf = b""
