"""What a GA4GH TES task runs, as the `tes/v1/task` flow takes it, and what it records.

The HTTP API (deployments/http_api/tes) turns a TES task document into a `TesPlan`: every
input and output URL resolved to a job-store key (or kept as a URL the flow cannot fetch, so
the task ends SYSTEM_ERROR with the reason), container paths checked. The flow
(`jobcloud.flows.tes_task`) runs the plan and writes a `TesRunLog` beside the manifest, from
which the API answers the task's logs.
"""

from __future__ import annotations

import posixpath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from jobcloud.blocks.url_policy import UrlPolicy
from jobcloud.flows.manifest import job_prefix

FileType = Literal["FILE", "DIRECTORY"]
# The outcome words of a task as TES names them; the flow records one in its run log.
Outcome = Literal["COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"]
# Container paths that are never mounted over: the kernel's and the engine's own.
RESERVED_ROOTS = ("/proc", "/sys", "/dev")
# The Prefect state name of a task whose executor failed (a Failed type): how the API tells
# EXECUTOR_ERROR from SYSTEM_ERROR without reading the store.
EXECUTOR_ERROR_STATE = "ExecutorError"
RUN_LOG_NAME = "tes.json"
# POSIX pattern characters (IEEE Std 1003.1-2017, 2.13), as TES output paths may use them.
WILDCARDS = frozenset("*?[")


class _Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExecutorPlan(_Plan):
    """One executor: its own container of its own image, run in order."""

    image: str
    command: list[str] = Field(min_length=1)
    workdir: str | None = None
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    ignore_error: bool = False


class InputPlan(_Plan):
    """An input placed at ``path``: a job-store key, inline content, an http(s) URL the
    operator's allow-list names, or a URL the flow may not read."""

    path: str
    type: FileType = "FILE"
    key: str | None = None
    content: str | None = None
    # Read by the flow under the plan's `url_policy` (checked again there, at every hop).
    url: str | None = None
    # A URL the flow may not read (another bucket, off the allow-list): the task is created and
    # ends SYSTEM_ERROR saying `why`, as other TES servers do for an input they cannot fetch.
    foreign_url: str | None = None
    why: str | None = None


class OutputPlan(_Plan):
    """A file or folder at ``path`` uploaded to the job-store ``key`` after the executors.

    A ``path`` with wildcards (`has_wildcards`) is a pattern: every match of the right type is
    uploaded under the folder ``key``, at the match's path less ``path_prefix`` (TES's rule).
    """

    path: str
    type: FileType = "FILE"
    key: str
    url: str = Field(description="The URL the task document named (TaskLog.outputs reports it).")
    path_prefix: str | None = Field(None, description="Taken off each match of a wildcard path to make its key under `key`.")

    @property
    def is_pattern(self) -> bool:
        return has_wildcards(self.path)

    def folder(self) -> str:
        """The container folder this output lives in: a folder output itself, a file's parent,
        a pattern's last folder before its first wildcard."""
        if self.is_pattern:
            return static_folder(self.path)
        return self.path if self.type == "DIRECTORY" else posixpath.dirname(self.path)


class TesPlan(_Plan):
    """Everything the flow needs: executors, files, volumes, hardware."""

    executors: list[ExecutorPlan] = Field(min_length=1)
    inputs: list[InputPlan] = Field(default_factory=list)
    outputs: list[OutputPlan] = Field(default_factory=list)
    volumes: list[str] = Field(default_factory=list)
    cpu: float | None = Field(None, description="CPU cores (TES resources.cpu_cores).")
    memory_mb: int | None = Field(None, description="Memory limit in MB (TES resources.ram_gb).")
    disk_gb: float | None = Field(None, gt=0, description="Free disk the task needs in the worker's work folder (TES resources.disk_gb).")
    gpu: int = Field(0, ge=0, description="GPUs (backend_parameters.gpu).")
    timeout_s: int | None = Field(None, gt=0, description="Seconds each executor may run (backend_parameters.timeout_s).")
    store_url: str = Field(description="The job store's URL base as TES clients name it (file://..., s3://...).")
    url_policy: UrlPolicy = Field(default_factory=UrlPolicy, description="What `url` inputs may be read from (the API's allow-list).")

    def folders(self) -> list[str]:
        """The container folders a task's files live in, each made empty before the first
        executor: each input's and output's folder (a file's parent), each volume, the folders
        of the executors' stdout/stderr files."""
        wanted: set[str] = set(self.volumes)
        for item in self.inputs:
            wanted.add(item.path if item.type == "DIRECTORY" else posixpath.dirname(item.path))
        wanted.update(item.folder() for item in self.outputs)
        for ex in self.executors:
            wanted.update(posixpath.dirname(p) for p in (ex.stdout, ex.stderr) if p)
        return sorted(wanted)

    def mount_roots(self) -> list[str]:
        """The container folders bind-mounted from the task's work folder, shared by every
        executor: `folders`, each nested one under its outermost one."""
        roots: list[str] = []
        for path in self.folders():
            if not any(path == r or path.startswith(r + "/") for r in roots):
                roots.append(path)
        return roots


def has_wildcards(path: str) -> bool:
    """Whether ``path`` is a pattern: POSIX's pattern characters (`*`, `?`, `[`)."""
    return bool(WILDCARDS & set(path))


def static_folder(pattern: str) -> str:
    """The folder of ``pattern`` before its first wildcard (`/data/run*/x.txt` -> `/data`)."""
    head = pattern[: min(pattern.index(c) for c in WILDCARDS if c in pattern)] if has_wildcards(pattern) else pattern
    return posixpath.dirname(head) if not head.endswith("/") else head.rstrip("/") or "/"


def check_container_path(path: str) -> str | None:
    """Why ``path`` cannot be a task's container path (None when it can): it must be absolute,
    normalized, below a top-level folder for a file, and outside /proc, /sys and /dev."""
    if not path.startswith("/"):
        return "must be an absolute path"
    if "\x00" in path or posixpath.normpath(path) != path or "//" in path:
        return "must be a normalized absolute path (no '..', '.', '//' or trailing '/')"
    if path == "/":
        return "cannot be '/'"
    if any(path == r or path.startswith(r + "/") for r in RESERVED_ROOTS):
        return f"cannot be under {', '.join(RESERVED_ROOTS)}"
    return None


class ExecutorRecord(BaseModel):
    """How one executor ran (TES ExecutorLog)."""

    start_time: str | None = None
    end_time: str | None = None
    exit_code: int
    stdout: str = Field("", description="The last lines of its output (stdout and stderr together).")
    stderr: str = ""


class OutputFileRecord(BaseModel):
    """One uploaded file (TES OutputFileLog)."""

    url: str
    path: str
    size_bytes: str


class TesRunLog(BaseModel):
    """The flow's record of one task, written as jobs/<id>/tes.json (the API's TaskLog)."""

    outcome: Outcome
    start_time: str
    end_time: str
    executors: list[ExecutorRecord] = Field(default_factory=list)
    outputs: list[OutputFileRecord] = Field(default_factory=list)
    system_logs: list[str] = Field(default_factory=list)


def run_log_key(job_id: str) -> str:
    """Where a task's `TesRunLog` lives in the job store."""
    return f"{job_prefix(job_id)}/{RUN_LOG_NAME}"


# The built-in deployments every TES task runs as: one flow, one deployment per pool.
TES_APPLICATION, TES_VERSION, TES_ENTRYPOINT = "tes", "v1", "task"
TES_FLOW_NAME = "tes-task"
TES_DEPLOYMENTS = {"cpu": "tes-v1-task", "gpu": "tes-v1-task-gpu"}
TES_TAG = "tes"
