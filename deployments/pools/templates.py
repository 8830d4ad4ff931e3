"""JobCloud's base job templates for pools of Prefect's own worker types (in-container mode).

Each template is the upstream worker's own (`<Worker>.get_default_base_job_template()`), so
every upstream variable keeps working, with these changes:

* `command` defaults to `/opt/jobcloud/venv/bin/python -m prefect.engine`: every in-container
  image keeps JobCloud's Python there (`jobcloud.deployments.pools.in_container`), and
  `python -m prefect.engine` runs the flow run named by PREFECT__FLOW_RUN_ID, which every
  worker sets. (Upstream's `prefect flow-run execute` would need `prefect` on the image's PATH.)
* `env` defaults carry JOBCLOUD_RUNNER=process (the flow runs the command as a subprocess),
  JOBCLOUD_WATCH_CANCEL=1 (the flow itself watches for a cancel, as no JobCloud worker is
  beside it), JOBCLOUD_POOL and the job store (JOBCLOUD_STORAGE), as `pools.pool_env` gives them.
* the variables JobCloud needs where upstream has none, each without a default so that an
  unset one leaves its field out of the job entirely:

| type           | GPUs                                                     | run-time limit |
|----------------|----------------------------------------------------------|----------------|
| `kubernetes`   | `gpu_limit` -> container `resources.limits["nvidia.com/gpu"]` | `active_deadline_seconds` -> Job `spec.activeDeadlineSeconds` |
| `ecs`          | `resource_requirements` -> container `resourceRequirements` (`[{"type": "GPU", "value": "N"}]`) | none in ECS |
| `cloud-run-v2` | `gpu_limit` -> container `resources.limits["nvidia.com/gpu"]`; `node_selector` -> task template `nodeSelector` | upstream `timeout` |
| `vertex-ai`    | upstream `accelerator_type`, `accelerator_count`          | upstream `maximum_run_time_hours` |
| `docker`       | upstream `container_create_kwargs` (`device_requests`)   | none in Docker |

* defaults by the pool's role (`cpu` or `gpu`): the `gpu` pool of `ecs` launches on `EC2`
  (Fargate has no GPUs), of `cloud-run-v2` selects `nvidia-l4` GPUs (`node_selector`), of
  `vertex-ai` attaches `NVIDIA_TESLA_T4` (`accelerator_type`); edit them in the pool for others.
* upstream defaults too short for scientific jobs are raised: Cloud Run's task `timeout`
  600 s -> 86400 s (its maximum), Vertex AI's `maximum_run_time_hours` 1 -> 168 (Vertex's own
  default), Kubernetes' `pod_watch_timeout_seconds` 60 -> 900 (pulling a CUDA image of several
  GB onto a fresh GPU node takes minutes). A deployment sets the catalog's values anyway
  (`pool_resources.deployment_job_variables`); these defaults only hold for runs without them.
* `docker`: `network_mode` defaults to `host`, so a container reaches a Prefect server or an
  S3 endpoint on the worker host's 127.0.0.1 (as `jobcloud` pools' flows do); set it to
  `bridge` or a network in the pool for isolation. A job store that is a local folder is
  mounted at the same path (`volumes`), so one docker host works with the default store.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from jobcloud.blocks.settings import env_name
from jobcloud.deployments.pools.in_container import VENV_PYTHON
from jobcloud.deployments.pools.types import is_in_container, worker_class

IN_CONTAINER_COMMAND = f"{VENV_PYTHON} -m prefect.engine"
IN_CONTAINER_ENV = {
    env_name("runner"): "process",
    env_name("watch_cancel"): "1",
    # Heartbeats every 30 s, as the JobCloud worker sets for its runs: the server's zombie
    # automation (`jobcloud-zombie-runs`) must hear from a long in-container job too.
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
}
ENV_DESCRIPTION = (
    "Environment of each flow run, over the worker's own. JobCloud's defaults, written by "
    "`jobcloud deploy`: JOBCLOUD_STORAGE (the job store every run uses: s3://, gs://, "
    "block:<name>, or a folder, which fits one host only), JOBCLOUD_POOL, and in pools whose "
    "flow runs inside the application's image JOBCLOUD_RUNNER=process, JOBCLOUD_WATCH_CANCEL=1 and "
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30."
)
# Defaults JobCloud raises (see the module docstring).
CLOUD_RUN_TIMEOUT_S = 86400
VERTEX_MAX_RUN_HOURS = 168
K8S_POD_WATCH_S = 900
CLOUD_RUN_GPU_TYPE = "nvidia-l4"
VERTEX_GPU_TYPE = "NVIDIA_TESLA_T4"
DOCKER_NETWORK_MODE = "host"

_NULLABLE_INT = {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]}


def with_env(template: dict[str, Any], env: dict[str, str], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A copy of ``template`` whose `env` defaults carry ``env`` (other defaults kept, the
    names in ``drop`` removed)."""
    template = copy.deepcopy(template)
    prop = template["variables"]["properties"]["env"]
    kept = {k: v for k, v in (prop.get("default") or {}).items() if k not in drop}
    prop["default"] = {**kept, **env}
    prop["description"] = ENV_DESCRIPTION
    return template


def _variable(template: dict[str, Any], name: str, schema: dict[str, Any], title: str, description: str) -> None:
    template["variables"]["properties"][name] = {"title": title, "description": description, **schema}


def _set_default(template: dict[str, Any], name: str, value: Any) -> None:
    template["variables"]["properties"][name]["default"] = value


def _kubernetes(template: dict[str, Any], pool: str) -> None:
    _variable(
        template,
        "gpu_limit",
        _NULLABLE_INT,
        "GPUs",
        "NVIDIA GPUs of the job's container (resources.limits nvidia.com/gpu). Set by JobCloud from the catalog's GPU.",
    )
    _variable(
        template,
        "active_deadline_seconds",
        _NULLABLE_INT,
        "Active Deadline Seconds",
        "Kubernetes stops the Job after this many seconds. Set by JobCloud: the catalog's timeout plus a grace for staging and uploads.",
    )
    manifest = template["job_configuration"]["job_manifest"]
    manifest["spec"]["activeDeadlineSeconds"] = "{{ active_deadline_seconds }}"
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["resources"]["limits"]["nvidia.com/gpu"] = "{{ gpu_limit }}"
    _set_default(template, "pod_watch_timeout_seconds", K8S_POD_WATCH_S)


def _ecs(template: dict[str, Any], pool: str) -> None:
    _variable(
        template,
        "resource_requirements",
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"type": {"type": "string"}, "value": {"type": "string"}},
                "required": ["type", "value"],
            },
        },
        "Resource Requirements",
        'The container\'s resourceRequirements, e.g. [{"type": "GPU", "value": "1"}] (EC2 launch type only). Set by JobCloud from the catalog\'s GPU.',
    )
    template["job_configuration"]["task_definition"]["containerDefinitions"][0]["resourceRequirements"] = "{{ resource_requirements }}"
    if pool == "gpu":
        _set_default(template, "launch_type", "EC2")  # Fargate gives no GPUs


def _cloud_run_v2(template: dict[str, Any], pool: str) -> None:
    _variable(
        template,
        "gpu_limit",
        {"anyOf": [{"type": "string", "pattern": "^[0-9]+$"}, {"type": "null"}]},
        "GPUs",
        "GPUs of the job's container (resources.limits nvidia.com/gpu; Cloud Run gives at most 1). Set by JobCloud from the catalog's GPU.",
    )
    _variable(
        template,
        "node_selector",
        {"anyOf": [{"type": "object", "properties": {"accelerator": {"type": "string"}}}, {"type": "null"}]},
        "Node Selector",
        'The task\'s nodeSelector: the GPU type, e.g. {"accelerator": "nvidia-l4"}.',
    )
    task = template["job_configuration"]["job_body"]["template"]["template"]
    task["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "{{ gpu_limit }}"
    task["nodeSelector"] = "{{ node_selector }}"
    _set_default(template, "timeout", CLOUD_RUN_TIMEOUT_S)
    if pool == "gpu":
        _set_default(template, "node_selector", {"accelerator": CLOUD_RUN_GPU_TYPE})


def _vertex_ai(template: dict[str, Any], pool: str) -> None:
    _set_default(template, "maximum_run_time_hours", VERTEX_MAX_RUN_HOURS)
    if pool == "gpu":
        _set_default(template, "accelerator_type", VERTEX_GPU_TYPE)


def _docker(template: dict[str, Any], pool: str) -> None:
    _set_default(template, "network_mode", DOCKER_NETWORK_MODE)
    # A finished job's container goes (its log and outputs are in the job store): nothing of a
    # job stays behind on the host.
    _set_default(template, "auto_remove", True)


_ADAPT: dict[str, Callable[[dict[str, Any], str], None]] = {
    "kubernetes": _kubernetes,
    "ecs": _ecs,
    "cloud-run-v2": _cloud_run_v2,
    "vertex-ai": _vertex_ai,
    "docker": _docker,
}
# Variables each type's template must have for JobCloud's job variables to take effect
# (Prefect's server accepts unknown job variables silently).
JOBCLOUD_VARIABLES: dict[str, tuple[str, ...]] = {
    "kubernetes": ("gpu_limit", "active_deadline_seconds"),
    "ecs": ("resource_requirements",),
    "cloud-run-v2": ("gpu_limit", "node_selector"),
    "vertex-ai": (),
    "docker": (),
}


def local_store_path(storage: str) -> str | None:
    """The folder of a job store that is a local folder (or file:// URL), else None."""
    if storage.startswith("file://"):
        return storage[len("file://") :]
    if "://" in storage or storage.startswith("block:"):
        return None
    return storage


def with_store_volume(template: dict[str, Any], storage: str) -> dict[str, Any]:
    """A docker template that mounts a local-folder job store at the same path (others as they are)."""
    template = copy.deepcopy(template)
    path = local_store_path(storage)
    volumes = template["variables"]["properties"].get("volumes")
    if path and isinstance(volumes, dict):
        mount = f"{path}:{path}"
        old = [v for v in volumes.get("default") or [] if v != mount]
        volumes["default"] = [*old, mount]
    return template


def in_container_template(pool_type: str, pool: str, env: dict[str, str]) -> dict[str, Any]:
    """JobCloud's base job template for pool ``pool`` (`cpu` or `gpu`) of Prefect worker type
    ``pool_type``, its `env` defaults ``env`` plus JOBCLOUD_RUNNER and JOBCLOUD_WATCH_CANCEL.

    Raises PoolTypeError when the type is unknown or its package is not installed.
    """
    if not is_in_container(pool_type) or pool_type not in _ADAPT:
        raise ValueError(f"{pool_type!r} is not an in-container pool type")
    template = copy.deepcopy(worker_class(pool_type).get_default_base_job_template())
    _set_default(template, "command", IN_CONTAINER_COMMAND)
    _ADAPT[pool_type](template, pool)
    template = with_env(template, {**IN_CONTAINER_ENV, **env})
    if pool_type == "docker" and env_name("storage") in env:
        template = with_store_volume(template, env[env_name("storage")])
    return template


def template_gaps(pool_type: str, template: dict[str, Any] | None) -> list[str]:
    """The variables JobCloud needs that an existing pool's template of ``pool_type`` lacks
    (empty for a JobCloud template): without them its job variables would be ignored."""
    try:
        props = template["variables"]["properties"]  # type: ignore[index]
    except (KeyError, TypeError):
        return ["variables"]
    if not isinstance(props.get("env"), dict):
        return ["env"]
    return [name for name in ("command", *JOBCLOUD_VARIABLES.get(pool_type, ())) if name not in props]


def command_of(template: dict[str, Any] | None) -> str | None:
    """The `command` default of a pool's template (None when it has none)."""
    try:
        return template["variables"]["properties"]["command"].get("default")  # type: ignore[index]
    except (KeyError, TypeError, AttributeError):
        return None
