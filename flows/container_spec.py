"""Turn an entrypoint and a job request into exactly what the container engine gets."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

from jobcloud.blocks.settings import get_settings
from jobcloud.flows.catalog import Entrypoint, EntrypointRef
from jobcloud.flows.request import JobRequest

FILES = "/files"
LABEL_PREFIX = "io.jobcloud"
# What a sweeper or a job's guard finds a job's containers by.
JOB_LABEL = f"{LABEL_PREFIX}.job-id"
# An array's element: its index (its containers carry the array run's JOB_LABEL).
ELEMENT_LABEL = f"{LABEL_PREFIX}.array-index"
API_LABEL = f"{LABEL_PREFIX}.api"
HOST_LABEL = f"{LABEL_PREFIX}.host"  # the worker host that ran it (JOBCLOUD_HOST_NAME)
# The exit code of the GPU check that starts a GPU job's command (`gpu_checked_command`), when
# the container sees fewer GPUs than the job asked for. Unusual on purpose: an app's own codes
# (1, 2), the shell's (126, 127) and signals (128 + N) stay apart from it.
GPU_CHECK_EXIT = 86
GPU_CHECK_NAME = "jobcloud-gpu-check"
# What the check prints, in the container's output and so in the job's failure message.
GPU_CHECK_MESSAGE = (
    "[jobcloud] the job asks for {gpus} GPU(s) but its container sees $n (/dev/nvidia<N>): the "
    "container engine did not give them; stopping before the application starts rather than "
    "running it on the CPU. Run it on a GPU host (docs/gpu-hosts.md) or pass --gpu 0"
)


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

        ``gpu_kwargs``: how this engine gives GPUs (`jobcloud.blocks.engine.require_gpus(...)
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


def host_name() -> str:
    """This host's name for its containers' HOST_LABEL."""
    return get_settings().host_name


def owning_api() -> str:
    """The Prefect API URL this process reports to (the label the sweeper matches on)."""
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url or "")


def shell_command(entry: Entrypoint) -> list[str]:
    """The catalog's cmd joined with spaces, run by /bin/sh -c (DECODE's contract).

    User values never enter this text: they reach the app as environment variables.
    """
    return ["/bin/sh", "-c", " ".join(entry.app.cmd)]


def job_gpus(entry: Entrypoint, request: JobRequest) -> int:
    """The GPUs a job gets: its `hardware.gpu` override, else the catalog's `GPU`."""
    override = request.hardware
    if override and override.gpu is not None:
        return override.gpu
    return entry.hardware.limits.GPU or 0


def image_for(entry: Entrypoint, gpus: int) -> str:
    """The image a job with ``gpus`` GPUs runs: `handler.gpu_image_url` when it gets GPUs and
    the entrypoint names one, else `handler.image_url`. Deployments on in-container pools take
    the same (with the catalog's GPU count), so the flow runs inside the image that runs the job."""
    if gpus > 0 and entry.handler.gpu_image_url:
        return entry.handler.gpu_image_url
    return entry.handler.image_url


def gpu_checked_command(command: list[str], gpus: int) -> list[str]:
    """``command`` (`shell_command`'s /bin/sh -c TEXT), preceded, when ``gpus`` > 0, by a check
    that the container sees that many GPUs; if it does not, the container prints why and exits
    `GPU_CHECK_EXIT` before TEXT runs.

    The engine-side probe (`jobcloud.blocks.engine.require_gpus`) can be wrong or skipped (an engine that
    accepts a request and ignores it, `JOBCLOUD_ASSUME_GPU=1`); this is what makes sure a GPU job
    never trains on the CPU quietly. GPUs are counted as /dev/nvidia<N> device nodes (what the
    NVIDIA runtime and CDI add, one per GPU), with `nvidia-smi -L` as a second opinion where
    nodes are missing. TEXT goes in as an argument ($1), never into the check's own text, and
    runs exactly as before: `exec /bin/sh -c TEXT`.
    """
    if gpus <= 0:
        return command
    text = command[-1]
    check = (
        'n=0; for d in /dev/nvidia[0-9]*; do [ -e "$d" ] && n=$((n+1)); done; '
        f'if [ "$n" -lt {gpus} ] && command -v nvidia-smi >/dev/null 2>&1; then '
        'm=$(nvidia-smi -L 2>/dev/null | grep -c "^GPU "); [ "${m:-0}" -gt "$n" ] && n=$m; fi; '
        f'if [ "$n" -lt {gpus} ]; then echo "{GPU_CHECK_MESSAGE.format(gpus=gpus)}" >&2; '
        f"exit {GPU_CHECK_EXIT}; fi; "
        'exec /bin/sh -c "$1"'
    )
    return ["/bin/sh", "-c", check, GPU_CHECK_NAME, text]


def build_spec(
    ref: EntrypointRef,
    entry: Entrypoint,
    request: JobRequest,
    host_files: Path,
    job_id: str,
) -> ContainerSpec:
    """The container for one job; hardware and timeout overrides win over the catalog.

    A job that gets GPUs runs the entrypoint's GPU image (`image_for`) and starts with the GPU
    check (`gpu_checked_command`).
    """
    hw = entry.hardware.limits
    override = request.hardware
    cpu = override.cpu if override and override.cpu is not None else hw.VCPU
    memory = override.memory if override and override.memory is not None else hw.MEMORY
    gpus = job_gpus(entry, request)
    return ContainerSpec(
        image=image_for(entry, gpus),
        command=gpu_checked_command(shell_command(entry), gpus),
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
            HOST_LABEL: host_name(),
        },
        network_mode="none" if entry.network == "none" else None,
        timeout=request.timeout or entry.hardware.timeout,
    )
