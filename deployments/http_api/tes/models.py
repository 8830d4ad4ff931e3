"""The objects of GA4GH TES v1.1 (task_execution_service.openapi.yaml beside this module),
exactly the spec's fields: py-tes refuses an answer with an unknown field or state.

Requests are read with unknown fields refused (a 400 naming the field); the server-set fields
of a task (`id`, `state`, `logs`, `creation_time`) are accepted in a request and ignored.
Answers are dumped without the fields that are unset (`exclude_none`).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class TesState(StrEnum):
    UNKNOWN = "UNKNOWN"
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELED = "CANCELED"
    PREEMPTED = "PREEMPTED"
    CANCELING = "CANCELING"


class TesView(StrEnum):
    MINIMAL = "MINIMAL"
    BASIC = "BASIC"
    FULL = "FULL"


class TesFileType(StrEnum):
    FILE = "FILE"
    DIRECTORY = "DIRECTORY"


class _Tes(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TesInput(_Tes):
    name: str | None = None
    description: str | None = None
    url: str | None = None
    path: str
    type: TesFileType | None = None
    content: str | None = None
    streamable: bool | None = None


class TesOutput(_Tes):
    name: str | None = None
    description: str | None = None
    url: str
    path: str
    path_prefix: str | None = None
    type: TesFileType | None = None


class TesResources(_Tes):
    cpu_cores: int | None = Field(None, ge=1, le=2**31 - 1)
    preemptible: bool | None = None
    ram_gb: float | None = Field(None, gt=0)
    disk_gb: float | None = Field(None, gt=0)
    zones: list[str] | None = None
    backend_parameters: dict[str, str] | None = None
    backend_parameters_strict: bool | None = None


class TesExecutor(_Tes):
    image: str = Field(min_length=1)
    command: list[str] = Field(min_length=1)
    workdir: str | None = None
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    env: dict[str, str] | None = None
    ignore_error: bool | None = None


class TesExecutorLog(_Tes):
    start_time: str | None = None
    end_time: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    exit_code: int


class TesOutputFileLog(_Tes):
    url: str
    path: str
    size_bytes: str


class TesTaskLog(_Tes):
    logs: list[TesExecutorLog]
    metadata: dict[str, str] | None = None
    start_time: str | None = None
    end_time: str | None = None
    outputs: list[TesOutputFileLog]
    system_logs: list[str] | None = None


class TesTask(_Tes):
    id: str | None = None
    state: TesState | None = None
    name: str | None = None
    description: str | None = None
    inputs: list[TesInput] | None = None
    outputs: list[TesOutput] | None = None
    resources: TesResources | None = None
    executors: list[TesExecutor] = Field(min_length=1)
    volumes: list[str] | None = None
    tags: dict[str, str] | None = None
    logs: list[TesTaskLog] | None = None
    creation_time: str | None = None


class MinimalTask(_Tes):
    """A task in the MINIMAL view: its id and state only."""

    id: str
    state: TesState


class TesCreateTaskResponse(_Tes):
    id: str


class TesListTasksResponse(_Tes):
    tasks: list[TesTask | MinimalTask]
    next_page_token: str | None = None


class TesServiceType(_Tes):
    group: str = "org.ga4gh"
    artifact: str = "tes"
    version: str = "1.1.0"


class TesOrganization(_Tes):
    name: str
    url: str


class TesServiceInfo(_Tes):
    id: str
    name: str
    type: TesServiceType = Field(default_factory=TesServiceType)
    description: str | None = None
    organization: TesOrganization
    contactUrl: str | None = None  # noqa: N815 - the spec's name
    documentationUrl: str | None = None  # noqa: N815 - the spec's name
    createdAt: str | None = None  # noqa: N815 - the spec's name
    updatedAt: str | None = None  # noqa: N815 - the spec's name
    environment: str | None = None
    version: str
    storage: list[str] | None = None
    tesResources_backend_parameters: list[str] | None = None  # noqa: N815 - the spec's name
