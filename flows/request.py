"""The parameters of one job, checked against its entrypoint before anything starts.

`JobRequest` holds every job parameter; `flow_signature` gives one entrypoint's flow only the
parameters that entrypoint takes, typed and with the catalog's defaults, so Prefect's run form
(its parameter schema) offers exactly those, marks the required inputs required and opens each
field as an input box.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    WithJsonSchema,
    create_model,
    field_validator,
)

from jobcloud.blocks.errors import ParameterError
from jobcloud.blocks.keys import check_key, last_name
from jobcloud.blocks.store.job_store import JobStore
from jobcloud.flows.callbacks import check_callback_url
from jobcloud.flows.catalog import BLOCK_NAME_PATTERN, Entrypoint, InputKind
from jobcloud.flows.secrets import require_secret_blocks

MIN_MEMORY_MB = 6  # the smallest limit container engines accept


class HardwareOverride(BaseModel):
    """Per-job overrides of the entrypoint's hardware defaults."""

    model_config = ConfigDict(extra="forbid")
    cpu: PositiveFloat | None = Field(None, description="CPU cores (e.g. 2 or 0.5).")
    memory: PositiveInt | None = Field(None, description="Memory limit in MB.")
    gpu: NonNegativeInt | None = Field(None, description="Number of GPUs.")


class JobRequest(BaseModel):
    """The job parameters, with the same names everywhere (UI, CLI, Python API)."""

    model_config = ConfigDict(extra="forbid")
    config_id: str | None = Field(None, description="Key of the configuration file or folder.")
    data_ids: list[str] = Field(default_factory=list, description="Keys of the data inputs.")
    artifact_ids: list[str] = Field(
        default_factory=list,
        description="Keys of artifacts, e.g. jobs/<id>/artifact of an earlier job.",
    )
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables (only allow-listed names).")
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="Secret environment variables: NAME -> name of the Prefect Secret block to read "
        "(block names only; the job loads the values, which never appear in parameters or logs).",
    )
    hardware: HardwareOverride | None = Field(None, description="Hardware overrides.")
    timeout: PositiveInt | None = Field(None, description="Seconds before the job is stopped.")
    callback_url: str | None = Field(None, description="http(s) URL that gets a JSON status update (PATCH) at each phase and at the end.")

    @field_validator("config_id", "callback_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # The run form's empty text box means "no config" (no callback).
        return None if value == "" else value

    def inputs(self) -> list[tuple[str, str]]:
        """(files_down kind, key) for every input, in order."""
        out = [("config_id", self.config_id)] if self.config_id else []
        out += [("data_ids", k) for k in self.data_ids]
        out += [("artifact_ids", k) for k in self.artifact_ids]
        return out


def validate_request(entry: Entrypoint, request: JobRequest) -> JobRequest:
    """Check keys, env names and overrides against the entrypoint; raise `ParameterError`.

    Returns the request with keys in canonical form.
    """
    allowed = set(entry.app.env)
    unknown = sorted(set(request.env) - allowed)
    if unknown:
        allow = ", ".join(sorted(allowed)) or "none"
        raise ParameterError(
            f"environment variable(s) {', '.join(unknown)} not allowed for this entrypoint "
            f"(allowed: {allow}); add them to app.env in the catalog to allow them"
        )
    for name, value in request.env.items():
        if "\x00" in value:
            raise ParameterError(f"environment variable {name} contains a NUL character")
    declared = entry.app.secrets
    unknown = sorted(set(request.secrets) - set(declared))
    if unknown:
        raise ParameterError(
            f"secret variable(s) {', '.join(unknown)} not declared for this entrypoint "
            f"(declared: {', '.join(sorted(declared)) or 'none'}); add them to app.secrets in the catalog"
        )
    for name, block in request.secrets.items():
        if not re.fullmatch(BLOCK_NAME_PATTERN, block):
            raise ParameterError(f"secret {name}: {block!r} is not a Prefect block name (lowercase letters, digits, '-')")
    down = entry.handler.files_down
    seen: dict[str, str] = {}
    canonical: dict[str, list[str]] = {"config_id": [], "data_ids": [], "artifact_ids": []}
    for kind, key in request.inputs():
        key = check_key(key)
        folder = getattr(down, kind)
        if folder is None:
            raise ParameterError(
                f"this entrypoint takes no {kind} (handler.files_down has no {kind}); drop {key!r} or add {kind} to files_down"
            )
        target = f"{folder}/{last_name(key)}"
        if target in seen:
            raise ParameterError(f"inputs {seen[target]!r} and {key!r} would both be staged at /files/{target}; rename one of them")
        seen[target] = key
        canonical[kind].append(key)
    if request.callback_url is not None:
        request = request.model_copy(update={"callback_url": check_callback_url(request.callback_url)})
    hw = request.hardware
    if hw and hw.memory is not None and hw.memory < MIN_MEMORY_MB:
        raise ParameterError(f"memory must be at least {MIN_MEMORY_MB} MB, got {hw.memory}")
    # Last: a wrong input (an unsafe key, a kind the entrypoint lacks) says so before this.
    missing = [kind for kind in entry.required_inputs if not getattr(request, kind)]
    if missing:
        raise ParameterError(
            "missing required input"
            + ("s" if len(missing) > 1 else "")
            + ": "
            + "; ".join(f"{kind} ({REQUIRED_HINTS[kind]})" for kind in missing)
            + ". This entrypoint cannot run without "
            + ("them" if len(missing) > 1 else "it")
            + " (required_inputs in the catalog)"
        )
    return request.model_copy(
        update={
            "config_id": canonical["config_id"][0] if canonical["config_id"] else None,
            "data_ids": canonical["data_ids"],
            "artifact_ids": canonical["artifact_ids"],
        }
    )


class CheckedRequest(JobRequest):
    """A `JobRequest` that `check_request` accepted: valid for its entrypoint, every input in
    the job store, every Secret block present. The flow runs one as it is, without checking
    it again (`jobcloud run --local` hands it over in-process)."""


def check_request(
    entry: Entrypoint,
    request: JobRequest,
    store: JobStore,
    before_secrets: Callable[[], object] | None = None,
) -> CheckedRequest:
    """Every check of a job's request before anything starts, in one place.

    `validate_request`, then every input key must exist in ``store``, then every Secret block
    the job reads must exist. The submit side (`jobcloud run`, the Python API) calls it so bad
    input is refused (exit 2) before a flow run exists; the job flow calls it for a request
    that is not yet a `CheckedRequest` (runs started from the Prefect UI or `prefect deployment
    run` bypass the submit side). ``before_secrets`` runs before the first Secret block lookup
    (the CLI fixes which Prefect API it talks to there); it is not called for a job without
    secrets.
    """
    if isinstance(request, CheckedRequest):
        return request
    request = validate_request(entry, request)
    for _, key in request.inputs():
        store.require(key)
    blocks = secret_blocks(entry, request)
    if blocks:
        if before_secrets is not None:
            before_secrets()
        require_secret_blocks(blocks)  # a missing block stops the job before anything starts
    return CheckedRequest(**dict(request))


# How to give each input: the command line option, and an example key that the Prefect UI
# shows as written (it drops anything in angle brackets, so no `<id>`).
REQUIRED_HINTS: dict[str, str] = {
    "config_id": "--config KEY, e.g. config/train.yaml",
    "data_ids": "--data KEY, e.g. data/exp1",
    "artifact_ids": "--artifact KEY, e.g. jobs/RUN_ID/artifact of an earlier job",
}


def hardware_model(entry: Entrypoint) -> type[HardwareOverride]:
    """`HardwareOverride` with the entrypoint's catalog hardware as its defaults (for the form)."""
    hw = entry.hardware.limits

    def field(name: str, kind: Any, default: Any, description: str) -> tuple[Any, Any]:
        # A plain type where the catalog has a value: the form opens an input box holding it.
        # Titled with the name a run passes (`hardware={"cpu": 4}`), not pydantic's "Cpu".
        return (kind if default is not None else kind | None, Field(default, title=name, description=description))

    return create_model(
        "Hardware",
        __base__=HardwareOverride,
        __doc__="Resources of this job; the defaults are the catalog's.",
        cpu=field("cpu", PositiveFloat, float(hw.VCPU) if hw.VCPU is not None else None, "CPU cores (e.g. 2 or 0.5)."),
        memory=field("memory", PositiveInt, hw.MEMORY, "Memory limit in MB."),
        gpu=field("gpu", NonNegativeInt, hw.GPU, "Number of GPUs (more than 0 needs a GPU host)."),
    )


def flow_signature(entry: Entrypoint) -> inspect.Signature:
    """The job flow's parameters for ``entry``: only the inputs it takes (those in files_down),
    `env` / `secrets` only where the catalog allows any, then `hardware`, `timeout` and
    `callback_url`.

    A required input (`required_inputs`) has no default, and a required list needs at least one
    key; an optional one defaults to an empty text or list. `env` and `secrets` default to {},
    `hardware` and `timeout` to the catalog's values. The names are `JobRequest`'s.
    """
    required = set(entry.required_inputs)
    params: list[tuple[str, Any, Any]] = []
    for kind in entry.inputs:
        if kind == "config_id":
            kind_type: Any = str
            empty: Any = ""
        else:
            kind_type, empty = list[str], []
        if kind in required:
            params.append((kind, Annotated[kind_type, Field(min_length=1)], inspect.Parameter.empty))
        else:
            params.append((kind, kind_type, empty))
    if entry.app.env:
        params.append(("env", dict[str, str], {}))
    if entry.app.secrets:
        params.append(("secrets", dict[str, str], {}))
    hardware = hardware_model(entry)
    # The model's schema inline (an object with its properties) rather than a $ref: the form
    # shows the same fields either way, and the deployment's Parameters tab then has its type.
    inline = {k: v for k, v in hardware.model_json_schema().items() if k not in ("title", "description")}
    params.append(("hardware", Annotated[hardware, WithJsonSchema(inline)], hardware()))
    timeout = entry.hardware.timeout
    params.append(("timeout", PositiveInt if timeout else PositiveInt | None, timeout))
    params.append(("callback_url", str, ""))
    return inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=default) for name, kind, default in params]
    )


def request_from_parameters(entry: Entrypoint, parameters: dict[str, Any]) -> JobRequest:
    """The `JobRequest` of a flow call's parameters (names from `flow_signature`)."""
    taken = set(flow_signature(entry).parameters)
    # `array` is the flow's too, but no job parameter: the job flow takes it out (array_request.py).
    unknown = sorted(set(parameters) - taken - {"array"})
    if unknown:
        raise ParameterError(f"this entrypoint takes no {', '.join(unknown)}; its parameters are {', '.join(sorted(taken))}")
    hardware = parameters.get("hardware")
    if isinstance(hardware, BaseModel):
        hardware = hardware.model_dump()
    return JobRequest(
        config_id=parameters.get("config_id"),
        data_ids=list(parameters.get("data_ids") or []),
        artifact_ids=list(parameters.get("artifact_ids") or []),
        env=dict(parameters.get("env") or {}),
        secrets=dict(parameters.get("secrets") or {}),
        hardware=hardware,
        timeout=parameters.get("timeout"),
        callback_url=parameters.get("callback_url") or None,
    )


def parameter_descriptions(entry: Entrypoint) -> dict[str, str]:
    """What the run form says about each parameter of ``entry``'s flow (no angle brackets: the
    Prefect UI drops them)."""
    down = entry.handler.files_down
    required = set(entry.required_inputs)

    def need(kind: InputKind, optional: str) -> str:
        return "Required." if kind in required else optional

    hw = entry.hardware.limits
    timeout = entry.hardware.timeout
    texts = {
        "config_id": f"Key of the configuration file or folder in the job store, e.g. config/train.yaml; "
        f"staged under /files/{down.config_id}. {need('config_id', 'Leave empty for none.')}",
        "data_ids": f"Keys of the data inputs (files or folders), e.g. data/exp1; each is staged under "
        f"/files/{down.data_ids} with its last name (data/exp1 becomes /files/{down.data_ids}/exp1). "
        f"{need('data_ids', 'Optional.')}",
        "artifact_ids": f"Keys of artifacts of earlier jobs, e.g. jobs/RUN_ID/artifact (RUN_ID: that job's "
        f"flow run id); staged under /files/{down.artifact_ids}. {need('artifact_ids', 'Optional.')}",
        "env": f"Environment variables for the container, NAME: value; allowed names: {', '.join(entry.app.env)}.",
        "secrets": "Secret variables, NAME: name of the Prefect Secret block to read (block names, never "
        f"values); declared: {', '.join(f'{k} (default block {v})' for k, v in entry.app.secrets.items())}.",
        "hardware": "CPU cores, memory (MB) and GPUs of this job; the defaults are the catalog's "
        f"(VCPU {_shown(hw.VCPU)}, MEMORY {_shown(hw.MEMORY)}, GPU {hw.GPU}).",
        "timeout": f"Seconds before the job is stopped; the catalog's default is {timeout}."
        if timeout
        else "Seconds before the job is stopped; empty: no limit.",
        "callback_url": "Optional http(s) URL that JobCloud PATCHes with a JSON status update at each phase "
        "and at the end (status, data_out, job id). Leave empty for none.",
    }
    return {name: texts[name] for name in flow_signature(entry).parameters}


def _shown(value: float | None) -> str:
    return "no limit" if value is None else f"{value:g}"


def secret_blocks(entry: Entrypoint, request: JobRequest) -> dict[str, str]:
    """Every secret variable of the job -> the Secret block it reads (the job's choice wins).

    Every declared secret is filled: a job cannot run without one, so a missing block stops it
    before anything starts.
    """
    return {**entry.app.secrets, **request.secrets}
