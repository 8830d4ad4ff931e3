"""An entrypoint's image, CPU, memory, GPUs and timeout as job variables of each pool type, and
what a platform cannot give.

`deployment_job_variables` gives a deployment's job variables (and a job's per-run ones for a
`hardware`/`timeout` override); `check_infra` lists what a platform refuses, before anything is
registered. Catalog units: `VCPU` cores, `MEMORY` MB (MiB, as the engine takes it), `GPU` a
count, `timeout` seconds. The mapping, type by type:

* `jobcloud`: nothing (the flow reads the entrypoint and starts the container itself).
* `docker` (prefect-docker 0.7.4): `image`; `image_pull_policy: Never` for `localhost/` images
  (they exist on the worker's engine only); `mem_limit` `<MB>m`; CPUs and GPUs through
  `container_create_kwargs` (`nano_cpus`, `device_requests: [{count, capabilities: [[gpu]]}]`,
  which the Docker SDK makes a DeviceRequest); no run-time limit in Docker: the flow enforces
  the timeout. No static limits.
* `kubernetes`: `image`; `cpu_request` = `cpu_limit` = VCPU; `memory_request` =
  `memory_limit` = `<MB>Mi`; `gpu_limit` (limits `nvidia.com/gpu`); `active_deadline_seconds`
  = timeout + grace. No static limits (the cluster decides).
* `ecs`: `image`; `cpu` in CPU units (1024 a vCPU) and `memory` MiB at task level; without GPUs
  (the `cpu` pool launches on Fargate) both are raised to the smallest Fargate size that holds
  them (e.g. 2 vCPU takes at least 4096 MiB), at most 16 vCPU and 120 GiB; with GPUs (the `gpu`
  pool launches on EC2) as asked, and `resource_requirements` `[{"type": "GPU", "value": "N"}]`,
  at most 8 (the largest GPU instances). ECS has no run-time limit for a task: the flow
  enforces the timeout (a task's `stopTimeout` is only the grace after a stop).
* `cloud-run-v2`: `image`; `cpu` one of Cloud Run's sizes (`<m>m` below one, then 1, 2, 4, 6, 8)
  at least VCPU and what the memory needs (over 4 GiB 2 CPUs, over 8 GiB 4, over 16 GiB 6, over
  24 GiB 8); `memory` `<MB>Mi`, at most 32 GiB; a GPU (at most 1) as `gpu_limit` "1", with at
  least 4 CPUs and 16 GiB as Cloud Run requires (the `gpu` pool's `node_selector` names the
  type); `timeout` = timeout + grace, at most 24 h (longer task timeouts are not generally
  available).
* `vertex-ai`: `image`; `machine_type` the smallest `n1-standard-{4..96}` or
  `n1-highmem-{2..96}` with at least VCPU cores and MEMORY (n1 machines take T4, V100, P100 and
  P4 GPUs); `accelerator_count` the GPUs, raised to 1, 2, 4 or 8 (the counts n1 machines take),
  at most 8 (the `gpu` pool's `accelerator_type` names the type); `maximum_run_time_hours`
  (Vertex's `scheduling.timeout`) = timeout + grace in whole hours, at most 7 days.

The platform's limit is the timeout plus `GRACE_S`, because the flow enforces the timeout
itself (the run ends `TimedOut` after the outputs and logs are uploaded); the platform's limit
is the backstop when the flow cannot.
"""

from __future__ import annotations

import math
from typing import Any

from jobcloud.deployments.pools.types import is_in_container, require_pool_type

GRACE_S = 900  # pulling the image, staging inputs, uploading outputs around the timeout
CLOUD_RUN_MAX_TIMEOUT_S = 24 * 3600
CLOUD_RUN_MAX_CPU = 8
CLOUD_RUN_MAX_MEMORY_MB = 32 * 1024
CLOUD_RUN_MAX_GPUS = 1
CLOUD_RUN_GPU_MIN_CPU = 4
CLOUD_RUN_GPU_MIN_MEMORY_MB = 16 * 1024
CLOUD_RUN_CPUS = (1, 2, 4, 6, 8)
# (memory above this many MiB, needs at least this many CPUs) on Cloud Run
CLOUD_RUN_MEMORY_CPU = ((24 * 1024, 8), (16 * 1024, 6), (8 * 1024, 4), (4 * 1024, 2))
VERTEX_MAX_TIMEOUT_S = 7 * 24 * 3600
VERTEX_GPU_COUNTS = (1, 2, 4, 8)
# (name, vCPUs, memory MiB); n1 machines as Vertex AI custom training takes them, small first
VERTEX_MACHINES = tuple(
    sorted(
        [(f"n1-standard-{n}", n, int(n * 3.75 * 1024)) for n in (4, 8, 16, 32, 64, 96)]
        + [(f"n1-highmem-{n}", n, int(n * 6.5 * 1024)) for n in (2, 4, 8, 16, 32, 64, 96)],
        key=lambda m: (m[1], m[2]),
    )
)
ECS_MAX_GPUS = 8
# Fargate task sizes: CPU units -> (min MiB, max MiB, step MiB)
FARGATE_SIZES = (
    (256, (512, 2048, 512)),  # 512, 1024, 2048 in fact; the 1536 step between is harmless
    (512, (1024, 4096, 1024)),
    (1024, (2048, 8192, 1024)),
    (2048, (4096, 16384, 1024)),
    (4096, (8192, 30720, 1024)),
    (8192, (16384, 61440, 4096)),
    (16384, (32768, 122880, 8192)),
)


def platform_timeout_s(timeout_s: int | None, maximum: int | None = None) -> int | None:
    """The platform's run-time limit for a job timeout: timeout + GRACE_S, capped at ``maximum``."""
    if not timeout_s:
        return None
    limit = timeout_s + GRACE_S
    return min(limit, maximum) if maximum else limit


def fargate_size(cpu: float | None, memory_mb: int | None) -> tuple[int, int] | None:
    """The smallest Fargate (CPU units, MiB) holding ``cpu`` cores and ``memory_mb``; None when
    none does (over 16 vCPU or 120 GiB)."""
    units = math.ceil((cpu or 1) * 1024)
    memory = memory_mb or 0
    for size, (low, high, step) in FARGATE_SIZES:
        if size < units or memory > high:
            continue
        wanted = max(low, memory)
        if size == 256:
            return size, next(m for m in (512, 1024, 2048) if m >= wanted)
        return size, low + math.ceil((wanted - low) / step) * step
    return None


def cloud_run_cpu(cpu: float | None, memory_mb: int | None, gpus: int) -> str:
    """Cloud Run's CPU limit for ``cpu`` cores: millicores below one, else the next allowed size,
    raised for what the memory and a GPU need."""
    need = cpu or 1
    for above, cores in CLOUD_RUN_MEMORY_CPU:
        if (memory_mb or 0) > above:
            need = max(need, cores)
            break
    if gpus:
        need = max(need, CLOUD_RUN_GPU_MIN_CPU)
    if need < 1:
        return f"{math.ceil(need * 1000)}m"
    return str(next((c for c in CLOUD_RUN_CPUS if c >= need), CLOUD_RUN_CPUS[-1]))


def vertex_machine(cpu: float | None, memory_mb: int | None) -> str | None:
    """The smallest n1 machine type with ``cpu`` cores and ``memory_mb``; None when none has."""
    for name, cores, memory in VERTEX_MACHINES:
        if cores >= (cpu or 0) and memory >= (memory_mb or 0):
            return name
    return None


def _kubernetes(image: str, cpu: float | None, memory_mb: int | None, gpus: int, timeout_s: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"image": image}
    if cpu:
        out["cpu_request"] = out["cpu_limit"] = f"{cpu:g}"
    if memory_mb:
        out["memory_request"] = out["memory_limit"] = f"{memory_mb}Mi"
    if gpus:
        out["gpu_limit"] = gpus
    if timeout_s:
        out["active_deadline_seconds"] = platform_timeout_s(timeout_s)
    return out


def _ecs(image: str, cpu: float | None, memory_mb: int | None, gpus: int, timeout_s: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"image": image}
    if gpus:
        # EC2 launch type: the task gets what it asks, with its GPUs.
        if cpu:
            out["cpu"] = math.ceil(cpu * 1024)
        if memory_mb:
            out["memory"] = memory_mb
        out["resource_requirements"] = [{"type": "GPU", "value": str(gpus)}]
        return out
    size = fargate_size(cpu, memory_mb)
    if size is not None and (cpu or memory_mb):
        out["cpu"], out["memory"] = size
    # Always given, so a per-run override without GPUs clears a deployment's.
    out["resource_requirements"] = []
    return out


def _cloud_run_v2(image: str, cpu: float | None, memory_mb: int | None, gpus: int, timeout_s: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"image": image}
    memory = memory_mb
    if gpus:
        memory = max(memory or 0, CLOUD_RUN_GPU_MIN_MEMORY_MB)
    if cpu or memory or gpus:
        out["cpu"] = cloud_run_cpu(cpu, memory, gpus)
    if memory:
        out["memory"] = f"{memory}Mi"
    if gpus:
        out["gpu_limit"] = str(gpus)
    if timeout_s:
        out["timeout"] = platform_timeout_s(timeout_s, CLOUD_RUN_MAX_TIMEOUT_S)
    return out


def _vertex_ai(image: str, cpu: float | None, memory_mb: int | None, gpus: int, timeout_s: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"image": image}
    if cpu or memory_mb:
        machine = vertex_machine(cpu, memory_mb)
        if machine:
            out["machine_type"] = machine
    if gpus:
        out["accelerator_count"] = next((n for n in VERTEX_GPU_COUNTS if n >= gpus), VERTEX_GPU_COUNTS[-1])
    if timeout_s:
        limit = platform_timeout_s(timeout_s, VERTEX_MAX_TIMEOUT_S) or 0
        out["maximum_run_time_hours"] = math.ceil(limit / 3600)
    return out


def _docker(image: str, cpu: float | None, memory_mb: int | None, gpus: int, timeout_s: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"image": image}
    if image.startswith("localhost/"):
        out["image_pull_policy"] = "Never"  # only on this engine; a pull would fail
    if memory_mb:
        out["mem_limit"] = f"{memory_mb}m"
    # The engine's init (tini, catatonit) as PID 1: the flow's Python as PID 1 has no SIGTERM
    # handler until its flow starts, so a stop before then waits out the whole grace (30 s).
    kwargs: dict[str, Any] = {"init": True}
    if cpu:
        kwargs["nano_cpus"] = int(cpu * 1e9)
    if gpus:
        kwargs["device_requests"] = [{"count": gpus, "capabilities": [["gpu"]]}]
    # Always given, so a per-run override replaces a deployment's whole.
    out["container_create_kwargs"] = kwargs
    return out


_MAPPERS = {
    "kubernetes": _kubernetes,
    "ecs": _ecs,
    "cloud-run-v2": _cloud_run_v2,
    "vertex-ai": _vertex_ai,
    "docker": _docker,
}


def deployment_job_variables(
    pool_type: str,
    image: str,
    cpu: float | None = None,
    memory_mb: int | None = None,
    gpus: int = 0,
    timeout_s: int | None = None,
) -> dict[str, Any]:
    """The job variables of a deployment of one entrypoint on a pool of ``pool_type``: its image,
    CPU cores, memory (MB), GPUs and timeout (s) in that platform's own fields (see the module
    docstring). The same for a job's per-run `hardware`/`timeout` override. `{}` for `jobcloud`
    (and legacy `process`) pools. Never includes `env` (Prefect replaces, not merges, other
    variables key by key, but merges `env`: the deployment's own `env` stays).

    Raises PoolTypeError for an unknown type.
    """
    if not is_in_container(pool_type):
        return {}
    require_pool_type(pool_type)
    return _MAPPERS[pool_type](image, cpu, memory_mb, gpus or 0, timeout_s)


def check_infra(
    pool_type: str,
    gpus: int = 0,
    timeout_s: int | None = None,
    cpu: float | None = None,
    memory_mb: int | None = None,
) -> list[str]:
    """What a platform of ``pool_type`` cannot give an entrypoint (or a job's override), each
    saying what to change; empty when it can. `jobcloud`, `docker` and `kubernetes` have no
    static limits (the host or the cluster decides)."""
    problems: list[str] = []

    def hours(s: int) -> str:
        return f"{s // 3600} h"

    if pool_type == "cloud-run-v2":
        if gpus > CLOUD_RUN_MAX_GPUS:
            problems.append(
                f"Cloud Run gives at most {CLOUD_RUN_MAX_GPUS} GPU to a job, not {gpus}: set hardware.GPU to 1, or use a kubernetes or vertex-ai gpu pool"
            )
        if timeout_s and timeout_s > CLOUD_RUN_MAX_TIMEOUT_S:
            problems.append(
                f"Cloud Run stops a task after at most {hours(CLOUD_RUN_MAX_TIMEOUT_S)}; timeout {timeout_s} s is longer: lower the timeout to {CLOUD_RUN_MAX_TIMEOUT_S} s or less"
            )
        if cpu and cpu > CLOUD_RUN_MAX_CPU:
            problems.append(f"Cloud Run gives at most {CLOUD_RUN_MAX_CPU} CPUs, not {cpu:g}: lower VCPU")
        if memory_mb and memory_mb > CLOUD_RUN_MAX_MEMORY_MB:
            problems.append(f"Cloud Run gives at most {CLOUD_RUN_MAX_MEMORY_MB} MB of memory, not {memory_mb}: lower MEMORY")
    elif pool_type == "vertex-ai":
        if gpus > VERTEX_GPU_COUNTS[-1]:
            problems.append(f"Vertex AI's n1 machines take at most {VERTEX_GPU_COUNTS[-1]} GPUs, not {gpus}: lower hardware.GPU")
        if timeout_s and timeout_s > VERTEX_MAX_TIMEOUT_S:
            problems.append(
                f"Vertex AI stops a custom job after at most 7 days; timeout {timeout_s} s is longer: lower it to {VERTEX_MAX_TIMEOUT_S} s or less"
            )
        if (cpu or memory_mb) and vertex_machine(cpu, memory_mb) is None:
            problems.append(
                f"no Vertex AI n1 machine has {cpu or 0:g} CPUs and {memory_mb or 0} MB (the largest: 96 CPUs, {VERTEX_MACHINES[-1][2]} MB): lower VCPU or MEMORY"
            )
    elif pool_type == "ecs":
        if gpus > ECS_MAX_GPUS:
            problems.append(f"ECS instances have at most {ECS_MAX_GPUS} GPUs, not {gpus}: lower hardware.GPU")
        if not gpus and (cpu or memory_mb) and fargate_size(cpu, memory_mb) is None:
            problems.append(
                f"Fargate gives a task at most 16 vCPU and 122880 MB, not {cpu or 0:g} vCPU and {memory_mb or 0} MB: lower VCPU or MEMORY (or run the pool on EC2)"
            )
    return problems
