"""Turn an entrypoint and a job request into exactly what the container engine gets."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

from flows.catalog import Entrypoint, EntrypointRef
from flows.request import JobRequest

FILES = "/files"
LABEL_PREFIX = "io.jobcloud"
# What a sweeper or a job's guard finds a job's containers by.
JOB_LABEL = f"{LABEL_PREFIX}.job-id"
API_LABEL = f"{LABEL_PREFIX}.api"


class ContainerSpec(BaseModel):
    """A container to run: image, command, environment, limits, mounts, labels."""

    image: str
    command: list[str]
    environment: dict[str, str] = Field(default_factory=dict)
    # Values of secret variables: excluded from model_dump/JSON (task parameters, the cache key,
    # logs) and masked in repr; only `create_kwargs` reveals them, to the engine.
    secret_environment: dict[str, SecretStr] = Field(default_factory=dict, exclude=True, repr=False)
    host_files: str = Field(description="Host folder bind-mounted at /files.")
    nano_cpus: int | None = None
    mem_limit_bytes: int | None = None
    gpus: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    network_mode: str | None = None
    timeout: int | None = None

    def create_kwargs(self, gpu_kwargs: dict | None = None) -> dict:
        """Keyword arguments for the Docker SDK's `containers.create`.

        ``gpu_kwargs``: how this engine gives GPUs (`blocks.engine.require_gpus(...)
        .create_kwargs(gpus)`, e.g. a CDI device on Podman); default a Docker DeviceRequest.
        """
        from docker.types import DeviceRequest

        kwargs: dict = {
            "image": self.image,
            "command": self.command,
            "environment": {**self.environment, **{k: v.get_secret_value() for k, v in self.secret_environment.items()}},
            "volumes": {self.host_files: {"bind": FILES, "mode": "rw"}},
            "working_dir": FILES,
            "labels": self.labels,
            "detach": True,
            # The app gets no privilege beyond an ordinary process.
            "cap_drop": ["ALL"],
            "cap_add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"],
            "security_opt": ["no-new-privileges"],
        }
        if self.nano_cpus:
            kwargs["nano_cpus"] = self.nano_cpus
        if self.mem_limit_bytes:
            kwargs["mem_limit"] = self.mem_limit_bytes
        if self.gpus > 0 and gpu_kwargs is not None:
            kwargs.update(gpu_kwargs)
        elif self.gpus > 0:
            kwargs["device_requests"] = [DeviceRequest(count=self.gpus, capabilities=[["gpu"]])]
        if self.network_mode:
            kwargs["network_mode"] = self.network_mode
        return kwargs


def owning_api() -> str:
    """The Prefect API URL this process reports to (the label the sweeper matches on)."""
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url or "")


def shell_command(entry: Entrypoint) -> list[str]:
    """The catalog's cmd joined with spaces, run by /bin/sh -c (DECODE's contract).

    User values never enter this text: they reach the app as environment variables.
    """
    return ["/bin/sh", "-c", " ".join(entry.app.cmd)]


def build_spec(
    ref: EntrypointRef,
    entry: Entrypoint,
    request: JobRequest,
    host_files: Path,
    job_id: str,
) -> ContainerSpec:
    """The container for one job; hardware and timeout overrides win over the catalog."""
    hw = entry.aws_resources.hardware
    override = request.hardware
    cpu = override.cpu if override and override.cpu is not None else hw.VCPU
    memory = override.memory if override and override.memory is not None else hw.MEMORY
    gpus = override.gpu if override and override.gpu is not None else hw.GPU
    return ContainerSpec(
        image=entry.handler.image_url,
        command=shell_command(entry),
        environment=dict(request.env),
        host_files=str(host_files),
        nano_cpus=int(cpu * 1e9) if cpu else None,
        mem_limit_bytes=memory * 1024 * 1024 if memory else None,
        gpus=gpus,
        labels={
            JOB_LABEL: job_id,
            f"{LABEL_PREFIX}.flow-run-id": job_id,
            f"{LABEL_PREFIX}.application": ref.application,
            f"{LABEL_PREFIX}.version": ref.version,
            f"{LABEL_PREFIX}.entrypoint": ref.entrypoint,
            # The server that owns the run: a sweeper only judges its own server's containers.
            API_LABEL: owning_api(),
        },
        network_mode="none" if entry.network == "none" else None,
        timeout=request.timeout or entry.aws_resources.timeout,
    )
