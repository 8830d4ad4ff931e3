"""The manifest: the record of one job, written last as jobs/<id>/manifest.json."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from blocks.job_store import FileRecord

OUTPUT_KINDS = ("output", "log", "artifact")


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


class JobManifest(BaseModel):
    """Everything about a finished job; the flow's result."""

    job_id: str
    application: str
    version: str
    entrypoint: str
    image: str
    command: list[str]
    env_names: list[str] = Field(description="Names of the variables set (values not kept).")
    hardware: dict[str, float | int | None]
    state: Literal["Completed", "Failed"]
    message: str | None = None
    exit_code: int | None = None
    timed_out: bool = False
    reused_from: str | None = None
    inputs: list[InputRecord] = Field(default_factory=list)
    outputs: list[OutputRecord] = Field(default_factory=list)
    skipped: list[str] = Field(
        default_factory=list, description="Links and special files in output folders, not uploaded."
    )
    timings: Timings = Field(default_factory=Timings)
    started_at: datetime
    finished_at: datetime

    @property
    def prefix(self) -> str:
        return job_prefix(self.job_id)


def job_prefix(job_id: str) -> str:
    """Where a job's files live in the store."""
    return f"jobs/{job_id}"
