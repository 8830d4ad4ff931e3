"""The application catalog (`application_config.yaml`), in DECODE OpenCloud's format.

application -> version -> entrypoint -> {app, handler, aws_resources}, read unchanged, with a
few optional extensions (description, cache, network, required_inputs, default_version,
app.secrets, aws_resources.retries, handler.gpu_image_url).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from jobcloud.blocks.errors import CatalogError, UnknownEntrypointError, UnsafeKeyError
from jobcloud.blocks.keys import check_key
from jobcloud.blocks.settings import get_settings

MAX_CATALOG_BYTES = 4 * 1024 * 1024
MAX_YAML_NODES = 200_000
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Prefect's own rule for block document names (prefect.types.names.BlockDocumentName).
BLOCK_NAME_PATTERN = r"^[a-z0-9-]+$"
MAX_RETRIES = 10
PATTERN_HINTS = {
    NAME_PATTERN: "is not a valid name (letters, digits, '_', '.', '-')",
    ENV_NAME_PATTERN: "is not a valid environment variable name (letters, digits, '_'; not a digit first)",
    BLOCK_NAME_PATTERN: "is not a valid Prefect block name (lowercase letters, digits, '-')",
}

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN)]
BlockName = Annotated[str, Field(pattern=BLOCK_NAME_PATTERN, max_length=100)]
# The kinds of input a job takes, as `handler.files_down` names them (and the job parameters).
InputKind = Literal["config_id", "data_ids", "artifact_ids"]
INPUT_KINDS: tuple[InputKind, ...] = ("config_id", "data_ids", "artifact_ids")


def default_secret_block(name: str) -> str:
    """The Secret block a secret variable reads when nothing names one: API_TOKEN -> api-token."""
    return name.lower().replace("_", "-")


def _folder(value: str) -> str:
    try:
        return check_key(value)
    except UnsafeKeyError as exc:
        raise ValueError(f"folder {value!r} must be a relative path under /files ({exc.reason})") from None


Folder = Annotated[str, AfterValidator(_folder)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AppSpec(_Strict):
    """What runs inside the container."""

    cmd: list[str] = Field(
        min_length=1,
        description="Joined with spaces and run by /bin/sh -c inside the container.",
    )
    env: list[EnvName] = Field(
        default_factory=list,
        description="Environment variables a job may set; no other name reaches the container.",
    )
    secrets: dict[EnvName, BlockName] = Field(
        default_factory=dict,
        description="Secret environment variables, NAME -> Prefect Secret block read by default. "
        "The catalog may also list names only ([NAME, ...]): the block is then the name in lower "
        "case with '_' -> '-'. A job may name another block per variable; values never appear in "
        "parameters, logs, the manifest or the UI.",
    )

    @field_validator("secrets", mode="before")
    @classmethod
    def _secret_list(cls, value: Any) -> Any:
        # The list form is shorthand for the default block names; both read as one mapping.
        shape = "secrets must be a list of variable names or a mapping NAME: block-name"
        if isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise ValueError(shape)
            if len(set(value)) != len(value):
                raise ValueError("a secret variable is listed twice")
            return {v: default_secret_block(v) for v in value}
        if not isinstance(value, dict):
            raise ValueError(shape)
        return value

    @model_validator(mode="after")
    def _plain_or_secret(self) -> AppSpec:
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise ValueError(
                f"{', '.join(both)} in both env and secrets; a variable is either plain (env, visible in parameters) or secret"
            )
        return self


class FilesDown(_Strict):
    """Where each kind of input is staged, relative to /files."""

    config_id: Folder | None = None
    data_ids: Folder | None = None
    artifact_ids: Folder | None = None


class FilesUp(_Strict):
    """Which folders under /files are uploaded after the container ends."""

    output: Folder | None = None
    log: Folder | None = None
    artifact: Folder | None = None


class HandlerSpec(_Strict):
    """The container image and its file layout."""

    image_url: str = Field(min_length=1)
    # Extension: the image a job runs when it gets GPUs (the catalog's GPU or a job's override),
    # e.g. the CUDA build of the app beside its CPU build. One tag, one image on every host.
    gpu_image_url: str | None = Field(
        None,
        min_length=1,
        description="The image a job runs when it gets GPUs (hardware.GPU > 0 or a job's gpu override); default image_url.",
    )
    files_down: FilesDown = Field(default_factory=FilesDown)
    files_up: FilesUp = Field(default_factory=FilesUp)


class Hardware(_Strict):
    """Default resources of a job; a job may override them."""

    MEMORY: PositiveInt | None = Field(None, description="Memory limit in MB.")
    VCPU: PositiveFloat | None = Field(None, description="CPU limit in cores.")
    GPU: NonNegativeInt = Field(0, description="GPUs requested; > 0 runs on the gpu pool.")


class HardwareSpec(_Strict):
    """What a job gets and how long it may run: DECODE's `aws_resources` key, whatever the
    backend (the catalog keeps DECODE's names; the code says `entry.hardware.limits`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)  # the catalog's own names out, too

    limits: Hardware = Field(default_factory=Hardware, alias="hardware")
    timeout: PositiveInt | None = Field(None, description="Seconds before the job is stopped.")
    # Extensions, next to timeout because both are the job's execution policy (like AWS Batch's
    # retryStrategy): retries of the application itself. Infrastructure failures are always
    # retried (JOBCLOUD_INFRA_ATTEMPTS); a timeout never is.
    retries: int = Field(0, ge=0, le=MAX_RETRIES, description="Runs again after a non-zero exit, up to this many times.")
    retry_delay_s: float = Field(5.0, ge=0, le=3600, description="Seconds between an application failure and its retry.")


class Entrypoint(_Strict):
    """One runnable entrypoint of one application version."""

    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)  # the catalog's own names out, too

    app: AppSpec
    handler: HandlerSpec
    hardware: HardwareSpec = Field(default_factory=HardwareSpec, alias="aws_resources")
    # Extensions (optional, not in DECODE's format).
    description: str | None = None
    cache: bool = Field(False, description="Reuse an earlier job's outputs for identical inputs.")
    network: Literal["bridge", "none"] = Field("bridge", description="'none' cuts the container off the network.")
    required_inputs: list[InputKind] = Field(
        default_factory=list,
        description="Inputs a job must give (each a files_down kind); the run form marks them "
        "required and a job without one is refused before anything starts.",
    )

    @model_validator(mode="after")
    def _required_are_taken(self) -> Entrypoint:
        down = self.handler.files_down
        for kind in self.required_inputs:
            if getattr(down, kind) is None:
                raise ValueError(f"required_inputs: {kind!r} is not in handler.files_down, so no job could give it")
        if len(set(self.required_inputs)) != len(self.required_inputs):
            raise ValueError("required_inputs: an input is listed twice")
        return self

    @property
    def inputs(self) -> list[InputKind]:
        """The kinds of input this entrypoint takes (those with a files_down folder), in order."""
        return [k for k in INPUT_KINDS if getattr(self.handler.files_down, k) is not None]

    @property
    def pool(self) -> str:
        """The work pool this entrypoint runs on."""
        return "gpu" if self.hardware.limits.GPU > 0 else "cpu"


class EntrypointRef(BaseModel):
    """application/version/entrypoint, the address of one entrypoint."""

    model_config = ConfigDict(frozen=True)
    application: str
    version: str
    entrypoint: str

    def __str__(self) -> str:
        return f"{self.application}/{self.version}/{self.entrypoint}"

    @property
    def flow_name(self) -> str:
        """The Prefect flow: `<application>-<entrypoint>` (one per entrypoint, all versions)."""
        return f"{self.application}-{self.entrypoint}"

    @property
    def deployment_name(self) -> str:
        """The Prefect deployment: `<application>-<version>-<entrypoint>`, the address with '-'
        for '/' (Prefect's full name is `<flow>/<deployment>`, so no '/' inside a name)."""
        return f"{self.application}-{self.version}-{self.entrypoint}"

    @property
    def deployment_full_name(self) -> str:
        """`<flow>/<deployment>`, as `prefect deployment run` and `run_deployment` take it."""
        return f"{self.flow_name}/{self.deployment_name}"

    @property
    def tags(self) -> list[str]:
        return [
            f"app:{self.application}",
            f"version:{self.version}",
            f"entrypoint:{self.entrypoint}",
        ]

    @classmethod
    def parse(cls, text: str) -> EntrypointRef:
        parts = text.strip("/").split("/")
        if len(parts) != 3 or not all(parts):
            raise UnknownEntrypointError(f"{text!r} is not APP/VERSION/ENTRYPOINT; list them with `jobcloud apps`")
        return cls(application=parts[0], version=parts[1], entrypoint=parts[2])


class Catalog(BaseModel):
    """The whole catalog: application -> version -> entrypoint -> `Entrypoint`."""

    model_config = ConfigDict(frozen=True)
    applications: dict[Name, dict[Name, dict[Name, Entrypoint]]]
    source: str | None = None

    def entries(self) -> Iterator[tuple[EntrypointRef, Entrypoint]]:
        """Every entrypoint, in file order."""
        for app, versions in self.applications.items():
            for version, entrypoints in versions.items():
                for name, entry in entrypoints.items():
                    yield EntrypointRef(application=app, version=version, entrypoint=name), entry

    def get(self, ref: EntrypointRef) -> Entrypoint:
        """The entrypoint at ``ref``, or an error that lists what exists."""
        versions = self.applications.get(ref.application)
        if versions is None:
            raise UnknownEntrypointError(
                f"no application {ref.application!r} in the catalog; known: {', '.join(self.applications) or 'none'}"
            )
        entrypoints = versions.get(ref.version)
        if entrypoints is None:
            raise UnknownEntrypointError(f"no version {ref.version!r} of {ref.application!r}; known: {', '.join(versions)}")
        entry = entrypoints.get(ref.entrypoint)
        if entry is None:
            raise UnknownEntrypointError(
                f"no entrypoint {ref.entrypoint!r} in {ref.application}/{ref.version}; known: {', '.join(entrypoints)}"
            )
        return entry


def _describe(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"] if p != "[key]"]
    if loc and loc[0] == "applications":
        loc = loc[1:]
    kind = err["type"]
    if kind == "extra_forbidden":
        where = ".".join(loc[:-1]) or "(top level)"
        return f"{where}: unknown key {loc[-1]!r}"
    if kind == "missing":
        where = ".".join(loc[:-1]) or "(top level)"
        return f"{where}: missing required key {loc[-1]!r}"
    where = ".".join(loc) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "string_pattern_mismatch" and loc:
        msg = PATTERN_HINTS.get(err.get("ctx", {}).get("pattern"), "is not a valid name")
        msg = f"{err['input']!r} {msg}"
    return f"{where}: {msg}"


class _CountingLoader(yaml.SafeLoader):
    """SafeLoader (no python tags) that refuses alias bombs: counts nodes with aliases expanded."""


def _count_nodes(node: yaml.Node, budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise CatalogError([f"the YAML expands to more than {MAX_YAML_NODES} nodes"])
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            _count_nodes(child, budget)
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            _count_nodes(k, budget)
            _count_nodes(v, budget)


def parse_catalog(text: str, source: str | None = None) -> Catalog:
    """Parse catalog YAML text into a `Catalog`, or raise `CatalogError` naming every problem."""
    if len(text.encode()) > MAX_CATALOG_BYTES:
        raise CatalogError([f"the file is larger than {MAX_CATALOG_BYTES} bytes"], source)
    try:
        loader = _CountingLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
        if node is None:
            raise CatalogError(["the file is empty; describe at least one application"], source)
        _count_nodes(node, [MAX_YAML_NODES])
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise CatalogError([f"{where}not valid YAML ({problem})"], source) from None
    except CatalogError as exc:
        raise CatalogError(exc.problems, source) from None
    if not isinstance(data, dict):
        raise CatalogError(["the top level must be a mapping: application -> version -> entrypoint"], source)
    try:
        return Catalog(applications=data, source=source)
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors()]
        raise CatalogError(problems, source) from None


def default_catalog_path() -> Path:
    """`JOBCLOUD_CONFIG`, else ./application_config.yaml."""
    return get_settings().config


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Read and validate the catalog file (default: `default_catalog_path()`)."""
    p = Path(path) if path is not None else default_catalog_path()
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise CatalogError(["the catalog file does not exist; pass a path or set JOBCLOUD_CONFIG"], str(p)) from None
    except OSError as exc:
        raise CatalogError([f"cannot read the catalog file: {exc.strerror}"], str(p)) from None
    if p.is_dir():
        raise CatalogError(["this is a folder, not a catalog file"], str(p))
    if size > MAX_CATALOG_BYTES:
        raise CatalogError([f"the file is larger than {MAX_CATALOG_BYTES} bytes"], str(p))
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CatalogError(["the file is not UTF-8 text"], str(p)) from None
    except OSError as exc:
        raise CatalogError([f"cannot read the catalog file: {exc.strerror}"], str(p)) from None
    return parse_catalog(text, source=str(p))
