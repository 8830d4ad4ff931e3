"""The parameters of one job, checked against its entrypoint before anything starts."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt

from blocks.errors import ParameterError
from blocks.keys import check_key, last_name
from flows.catalog import BLOCK_NAME_PATTERN, Entrypoint

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
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables (only allow-listed names)."
    )
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="Secret environment variables: NAME -> name of the Prefect Secret block to read "
        "(block names only; the job loads the values, which never appear in parameters or logs).",
    )
    hardware: HardwareOverride | None = Field(None, description="Hardware overrides.")
    timeout: PositiveInt | None = Field(None, description="Seconds before the job is stopped.")

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
            raise ParameterError(
                f"secret {name}: {block!r} is not a Prefect block name (lowercase letters, digits, '-')"
            )
    down = entry.handler.files_down
    seen: dict[str, str] = {}
    canonical: dict[str, list[str]] = {"config_id": [], "data_ids": [], "artifact_ids": []}
    for kind, key in request.inputs():
        key = check_key(key)
        folder = getattr(down, kind)
        if folder is None:
            raise ParameterError(
                f"this entrypoint takes no {kind} (handler.files_down has no {kind}); "
                f"drop {key!r} or add {kind} to files_down"
            )
        target = f"{folder}/{last_name(key)}"
        if target in seen:
            raise ParameterError(
                f"inputs {seen[target]!r} and {key!r} would both be staged at /files/{target}; "
                "rename one of them"
            )
        seen[target] = key
        canonical[kind].append(key)
    hw = request.hardware
    if hw and hw.memory is not None and hw.memory < MIN_MEMORY_MB:
        raise ParameterError(f"memory must be at least {MIN_MEMORY_MB} MB, got {hw.memory}")
    return request.model_copy(
        update={
            "config_id": canonical["config_id"][0] if canonical["config_id"] else None,
            "data_ids": canonical["data_ids"],
            "artifact_ids": canonical["artifact_ids"],
        }
    )


def secret_blocks(entry: Entrypoint, request: JobRequest) -> dict[str, str]:
    """Every secret variable of the job -> the Secret block it reads (the job's choice wins).

    Every declared secret is filled: a job cannot run without one, so a missing block stops it
    before anything starts.
    """
    return {**entry.app.secrets, **request.secrets}
