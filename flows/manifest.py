"""The manifest: the record of one job, written last as jobs/<id>/manifest.json."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from jobcloud.blocks.store.job_store import FileRecord

OUTPUT_KINDS = ("output", "log", "artifact")

# How a job ended, by the name of its final Prefect state. TimedOut is a Failed-type state
# named as Prefect names its own timeouts; Cancelled and Crashed are written by whatever
# records a job that did not end on its own (a crash guard), never by a normal ending.
JobState = Literal["Completed", "Failed", "TimedOut", "Cancelled", "Crashed"]


class InputRecord(BaseModel):
    """One staged input key and the files it brought."""

    kind: Literal["config_id", "data_ids", "artifact_ids"]
    key: str
    staged_at: str = Field(description="Where it appeared inside the container.")
    files: list[FileRecord]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


class OutputRecord(FileRecord):
    """One uploaded file of the job."""

    kind: Literal["output", "log", "artifact"]


class Timings(BaseModel):
    """Seconds spent in each phase."""

    staging_s: float = 0.0
    container_s: float = 0.0
    upload_s: float = 0.0
    total_s: float = 0.0
    # When the command itself ran (its last attempt): what a pool's limit bounds.
    command_started_at: datetime | None = None
    command_ended_at: datetime | None = None


class JobManifest(BaseModel):
    """Everything about a finished job; the flow's result."""

    job_id: str
    application: str
    version: str
    entrypoint: str
    image: str
    command: list[str]
    env_names: list[str] = Field(description="Names of the variables set (values not kept).")
    secret_names: list[str] = Field(default_factory=list, description="Names of the secret variables set (values never kept).")
    hardware: dict[str, float | int | None]
    image_id: str | None = Field(None, description="The id of the image that ran (host mode: the engine's; tags can move).")
    runner: str = Field(
        "engine",
        description="How the command ran: `engine` (the application's container beside "
        "the flow) or `process` (a subprocess of the flow, inside the application's image).",
    )
    definition: str = Field(
        "catalog",
        description="Where the entrypoint came from: `deployment` (what `jobcloud deploy` "
        "recorded in the deployment) or `catalog` (the catalog file read when the job started).",
    )
    definition_sha256: str | None = Field(
        None,
        description="SHA-256 of the entrypoint definition that ran (image, command, env "
        "allow-list, files, hardware, timeout), as `jobcloud deploy` prints it.",
    )
    state: JobState = Field(
        description="How the job ended, the name of its final Prefect state: Completed (exit 0), "
        "Failed (non-zero exit or an error), TimedOut (stopped at its timeout), Cancelled, Crashed."
    )
    message: str | None = None
    exit_code: int | None = None
    timed_out: bool = False
    attempts: int = Field(
        1,
        description="Times the container was started (0: it never ran, or outputs were reused): "
        "infrastructure failures are retried, app failures where aws_resources.retries allows; "
        "the outputs are the last attempt's.",
    )
    reused_from: str | None = None
    inputs: list[InputRecord] = Field(default_factory=list)
    outputs: list[OutputRecord] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list, description="Links and special files in output folders, not uploaded.")
    timings: Timings = Field(default_factory=Timings)
    started_at: datetime
    finished_at: datetime

    @property
    def prefix(self) -> str:
        return job_prefix(self.job_id)


def job_prefix(job_id: str) -> str:
    """Where a job's files live in the store."""
    return f"jobs/{job_id}"


def human_size(n: int) -> str:
    """``n`` bytes for people: 27 B, 1.3 KiB, 64.3 MiB (as `jobcloud files ls` prints them)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


class JobEnded(Exception):
    """The data of the final state of a job that did not complete: an exception whose message
    is the state's one-line message, with the job's manifest (JSON-ready, as
    `manifest.model_dump(mode="json")`) as ``manifest``.

    Where Prefect asks for a Failed or Cancelled run's result with `raise_on_failure` (a
    worker's `python -m prefect.engine` does, and logs what it raises), it raises the state's
    data when that is an exception; any other data makes it log a TypeError, "... cannot be
    resolved into an exception", instead. Readers of a job take the manifest from the store
    (jobs/<id>/manifest.json: `jobcloud jobs show`, `--json`); callers of the flow in this
    process may take it from here.
    """

    def __init__(self, message: str, manifest: dict[str, Any]) -> None:
        super().__init__(message)
        self.manifest = manifest

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled with its manifest (an Exception pickles only its args by default).
        return (type(self), (str(self), self.manifest))


def job_state(state: Any) -> JobState:
    """The manifest's `state` for a final Prefect state (TimedOut by name, else by type)."""
    if state.name == "TimedOut":
        return "TimedOut"
    names: dict[str, JobState] = {
        "COMPLETED": "Completed",
        "CANCELLED": "Cancelled",
        "CANCELLING": "Cancelled",
        "CRASHED": "Crashed",
    }
    return names.get(state.type.value, "Failed")
