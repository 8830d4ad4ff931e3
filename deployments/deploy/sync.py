"""`jobcloud deploy`: make the Prefect server match the catalog.

One deployment per (application, version, entrypoint): flow `<application>-<entrypoint>`,
deployment `<application>-<version>-<entrypoint>` (so the deployments list says what each row
is; Prefect's full name is `<flow>/<deployment>`, e.g. `linefit-train/linefit-v1-train`),
entrypoint `jobcloud.flows.catalog_flows.<app>/<version>/<entrypoint>`, on pool `gpu` if the entrypoint
asks for a GPU, else `cpu`, default queue `priority-0`. Each has the catalog's description, tags
`jobcloud app:… version:… entrypoint:…` (flow runs inherit them), and the flow's parameter
schema, enforced by the server: only the inputs the entrypoint takes, the required ones
required, each field typed, described and with its default (the catalog's hardware and
timeout); see `jobcloud.flows.request.flow_signature`. Each also carries the entrypoint's whole
definition (image, command, env allow-list, files, hardware, timeout) as its job variable
`env.JOBCLOUD_ENTRYPOINT` (`jobcloud.flows.definition`): a flow run runs what was deployed, on any host,
with no catalog file there. `deploy` reports which deployments changed and what in them.

Scheduled jobs are declared in `prefect.yaml` (a deployment with `schedules:`); `deploy` applies
those too, so a schedule exists after `jobcloud deploy` as after `prefect deploy --all`.

Idempotent: a deployment whose managed fields already match is not written. `prune` deletes
deployments tagged `jobcloud` that are no longer wanted (also those under names of an earlier
JobCloud release, e.g. `linefit-train/v1`); without it each is reported as a `warning`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from jobcloud.blocks.errors import UserError
from jobcloud.deployments.notify.automations import ZOMBIE_AUTOMATION, sync_zombie_automation, zombie_after_s
from jobcloud.deployments.notify.notifications import notify_settings, sync_notifications
from jobcloud.deployments.pools.resources import check_infra, deployment_job_variables
from jobcloud.deployments.pools.types import DEFAULT_POOL_TYPE, POOL_TYPES, POOLS, parse_pool_types
from jobcloud.deployments.pools.work_pools import DEFAULT_PRIORITY, PoolChange, ensure_pools, pool_type_of, queue_name
from jobcloud.flows.catalog import Catalog, EntrypointRef
from jobcloud.flows.catalog_flows import entrypoint_of, flow_for, ref_of_attribute
from jobcloud.flows.container_spec import image_for
from jobcloud.flows.definition import DEFINITION_ENV, encode_definition

# Prefect is imported inside the functions: never before `ensure_api` has fixed the API.

MANAGED_TAG = "jobcloud"
SCHEDULE_TAG = "schedule"
ENTRYPOINT_PREFIX = "jobcloud.flows.catalog_flows."
# The code is the installed package, so there is nothing to pull. Without any pull step a
# process worker copies its whole current folder into each run's temporary workspace (seconds
# per run, and files that have nothing to do with the job); this step keeps that workspace empty.
PULL_STEPS: list[dict[str, Any]] = [{"prefect.deployments.steps.set_working_directory": {"directory": "."}}]


class CronSchedule(BaseModel):
    """A cron schedule of a deployment, as `prefect.yaml` writes it."""

    cron: str
    timezone: str = "UTC"
    active: bool = True


class DeploymentSpec(BaseModel):
    """The managed fields of one deployment, from the catalog or prefect.yaml."""

    flow_name: str
    name: str
    ref: EntrypointRef
    entrypoint: str
    work_pool_name: str
    work_queue_name: str
    description: str
    tags: list[str]
    parameters: dict[str, Any] = Field(default_factory=dict)
    parameter_openapi_schema: dict[str, Any] = Field(default_factory=dict)
    job_variables: dict[str, Any] = Field(default_factory=dict)
    schedules: list[CronSchedule] = Field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


class DeployChange(BaseModel):
    """What `sync` did to one deployment (or pool/queue)."""

    name: str
    action: str  # created | updated | unchanged | deleted | warning
    detail: str = ""


def _schema(ref: EntrypointRef, catalog: Catalog) -> dict[str, Any]:
    from prefect.utilities.callables import parameter_schema

    # The same function `prefect deploy` uses, so both paths give the same form.
    return parameter_schema(flow_for(ref, catalog)).model_dump(mode="json", exclude_unset=True)


def definition_variables(ref: EntrypointRef, entry: Any) -> dict[str, Any]:
    """The job variables that carry ``ref``'s definition to every flow run of its deployment."""
    return {"env": {DEFINITION_ENV: encode_definition(ref, entry)}}


def _merge_variables(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, `env` merged key by key (as Prefect merges a run's `env`)."""
    merged = {**base, **extra}
    if isinstance(base.get("env"), dict) and isinstance(extra.get("env"), dict):
        merged["env"] = {**base["env"], **extra["env"]}
    return merged


def catalog_deployments(catalog: Catalog) -> list[DeploymentSpec]:
    """The deployment of every catalog entrypoint."""
    specs = []
    for ref, entry in catalog.entries():
        specs.append(
            DeploymentSpec(
                flow_name=ref.flow_name,
                name=ref.deployment_name,
                ref=ref,
                entrypoint=entrypoint_of(ref),
                work_pool_name=entry.pool,
                work_queue_name=queue_name(DEFAULT_PRIORITY),
                description=entry.description or f"{ref} in {entry.handler.image_url}",
                tags=[MANAGED_TAG, *ref.tags],
                # The form's defaults (hardware and timeout from the catalog) are the flow's own.
                parameters={},
                parameter_openapi_schema=_schema(ref, catalog),
                job_variables=definition_variables(ref, entry),
            )
        )
    return specs


def scheduled_deployments(prefect_yaml: Path | None, catalog: Catalog) -> list[DeploymentSpec]:
    """Deployments with `schedules:` in prefect.yaml (recurring jobs with fixed parameters)."""
    if prefect_yaml is None or not prefect_yaml.exists():
        return []
    doc = yaml.safe_load(prefect_yaml.read_text()) or {}
    specs = []
    for i, d in enumerate(doc.get("deployments") or []):
        if not d.get("schedules"):
            continue
        where = f"{prefect_yaml}: deployments[{i}] ({d.get('name')})"
        entrypoint = d.get("entrypoint", "")
        if not entrypoint.startswith(ENTRYPOINT_PREFIX):
            raise UserError(f"{where}: entrypoint must start with {ENTRYPOINT_PREFIX!r}")
        ref = ref_of_attribute(entrypoint[len(ENTRYPOINT_PREFIX) :])
        entry = catalog.get(ref)
        pool = d.get("work_pool") or {}
        specs.append(
            DeploymentSpec(
                flow_name=ref.flow_name,
                name=d["name"],
                ref=ref,
                entrypoint=entrypoint,
                work_pool_name=pool.get("name") or entry.pool,
                work_queue_name=pool.get("work_queue_name") or queue_name(DEFAULT_PRIORITY),
                description=d.get("description") or entry.description or str(ref),
                tags=list(d.get("tags") or [MANAGED_TAG, SCHEDULE_TAG, *ref.tags]),
                parameters=d.get("parameters") or {},
                parameter_openapi_schema=_schema(ref, catalog),
                job_variables=_merge_variables(pool.get("job_variables") or {}, definition_variables(ref, entry)),
                schedules=[CronSchedule(**s) for s in d["schedules"]],
            )
        )
    return specs


def desired_deployments(catalog: Catalog, prefect_yaml: Path | None = None) -> list[DeploymentSpec]:
    """Everything `deploy` makes: the catalog's deployments, then prefect.yaml's schedules."""
    specs = catalog_deployments(catalog) + scheduled_deployments(prefect_yaml, catalog)
    seen: dict[str, DeploymentSpec] = {}
    for spec in specs:
        if spec.full_name in seen:
            raise UserError(
                f"{spec.ref} and {seen[spec.full_name].ref} would both be deployment {spec.full_name!r}; "
                "rename one of them (or the scheduled deployment in prefect.yaml)"
            )
        seen[spec.full_name] = spec
    return specs


def _current(dep: Any) -> dict[str, Any]:
    return {
        "entrypoint": dep.entrypoint,
        "work_pool_name": dep.work_pool_name,
        "work_queue_name": dep.work_queue_name,
        "description": dep.description,
        "tags": sorted(dep.tags),
        "parameters": dep.parameters,
        "parameter_openapi_schema": dep.parameter_openapi_schema,
        "job_variables": dep.job_variables or {},
        "enforce_parameter_schema": dep.enforce_parameter_schema,
        "pull_steps": dep.pull_steps or [],
    }


def _wanted(spec: DeploymentSpec) -> dict[str, Any]:
    return {
        "entrypoint": spec.entrypoint,
        "work_pool_name": spec.work_pool_name,
        "work_queue_name": spec.work_queue_name,
        "description": spec.description,
        "tags": sorted(spec.tags),
        "parameters": spec.parameters,
        "parameter_openapi_schema": spec.parameter_openapi_schema,
        "job_variables": spec.job_variables,
        "enforce_parameter_schema": True,
        "pull_steps": PULL_STEPS,
    }


def what_changed(current: dict[str, Any], wanted: dict[str, Any]) -> str:
    """The managed fields that differ, for the line `deploy` prints; a changed definition names
    its own fields, e.g. `definition (app.cmd, handler.image_url)`."""
    fields: list[str] = []
    for key, value in wanted.items():
        if current.get(key) == value:
            continue
        if key != "job_variables":
            fields.append(key.replace("_", " "))
            continue
        said = _definition_change(current.get(key) or {}, value)
        if said:
            fields.append(said)
        if _without_definition(current.get(key)) != _without_definition(value):
            fields.append("job variables")
    return ", ".join(fields)


def _definition_text(variables: dict[str, Any] | None) -> str | None:
    env = (variables or {}).get("env")
    return env.get(DEFINITION_ENV) if isinstance(env, dict) else None


def _without_definition(variables: dict[str, Any] | None) -> dict[str, Any]:
    variables = dict(variables or {})
    if isinstance(variables.get("env"), dict):
        env = {k: v for k, v in variables["env"].items() if k != DEFINITION_ENV}
        variables["env"] = env
        if not env:
            del variables["env"]
    return variables


def _definition_change(old_vars: dict[str, Any], new_vars: dict[str, Any]) -> str | None:
    old_text, new_text = _definition_text(old_vars), _definition_text(new_vars)
    if old_text == new_text:
        return None
    if not old_text or not new_text:
        return "definition (new)" if new_text else "definition (removed)"
    try:
        paths = _diff_paths(json.loads(old_text)["entry"], json.loads(new_text)["entry"])
    except (ValueError, KeyError, TypeError):
        paths = []
    return f"definition ({', '.join(paths)})" if paths else "definition"


def _diff_paths(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict) and not prefix:
            out += _diff_paths(a, b, f"{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def _schedules_of(client: Any, deployment_id: Any) -> list[CronSchedule]:
    out = []
    for s in client.read_deployment_schedules(deployment_id):
        cron = getattr(s.schedule, "cron", None)
        if cron:
            out.append(CronSchedule(cron=cron, timezone=s.schedule.timezone or "UTC", active=s.active))
    return out


def _apply(client: Any, spec: DeploymentSpec) -> DeployChange:
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule as PrefectCron
    from prefect.exceptions import ObjectNotFound

    try:
        existing = client.read_deployment_by_name(spec.full_name)
    except ObjectNotFound:
        existing = None
    changed = ""
    if existing is not None:
        current, wanted = _current(existing), _wanted(spec)
        same_schedules = _schedules_of(client, existing.id) == spec.schedules
        if current == wanted and same_schedules:
            return DeployChange(name=spec.full_name, action="unchanged")
        changed = what_changed(current, wanted) or "schedules"
    flow_id = client.create_flow_from_name(spec.flow_name)
    dep_id = client.create_deployment(
        flow_id=flow_id,
        name=spec.name,
        version=spec.ref.version,
        description=spec.description,
        tags=spec.tags,
        parameters=spec.parameters,
        parameter_openapi_schema=spec.parameter_openapi_schema,
        entrypoint=spec.entrypoint,
        work_pool_name=spec.work_pool_name,
        work_queue_name=spec.work_queue_name,
        job_variables=spec.job_variables,
        enforce_parameter_schema=True,
        pull_steps=PULL_STEPS,
    )
    if existing is None or _schedules_of(client, dep_id) != spec.schedules:
        for s in client.read_deployment_schedules(dep_id):
            client.delete_deployment_schedule(dep_id, s.id)
        if spec.schedules:
            client.create_deployment_schedules(
                dep_id,
                [DeploymentScheduleCreate(schedule=PrefectCron(cron=s.cron, timezone=s.timezone), active=s.active) for s in spec.schedules],
            )
    if existing is None:
        return DeployChange(name=spec.full_name, action="created", detail=spec.work_pool_name)
    return DeployChange(name=spec.full_name, action="updated", detail=f"{spec.work_pool_name}: {changed}")


def _unwanted(client: Any, wanted: set[str]) -> list[tuple[Any, str]]:
    """(id, full name) of every deployment tagged `jobcloud` that is not in ``wanted``: its
    entrypoint left the catalog, or it has a name of an earlier release (`linefit-train/v1`)."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    deps = client.read_deployments(deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[MANAGED_TAG])))
    flows: dict[Any, str] = {}
    out = []
    for dep in deps:
        if dep.flow_id not in flows:
            flows[dep.flow_id] = client.read_flow(dep.flow_id).name
        full = f"{flows[dep.flow_id]}/{dep.name}"
        if full not in wanted:
            out.append((dep.id, full))
    return out


def _prune(client: Any, wanted: set[str]) -> list[DeployChange]:
    changes = []
    for dep_id, full in _unwanted(client, wanted):
        client.delete_deployment(dep_id)
        changes.append(DeployChange(name=full, action="deleted"))
    return changes


def _stale(client: Any, wanted: set[str]) -> list[DeployChange]:
    return [
        DeployChange(name=full, action="warning", detail="not wanted (left the catalog, or an old name); --prune deletes it")
        for _, full in _unwanted(client, wanted)
    ]


def planned_pool_types(client: Any, named: dict[str, str] | None) -> dict[str, str]:
    """The type each pool will have: ``named`` (`--pool-type`) over JOBCLOUD_POOL_TYPES, else the
    type an existing pool has, else `jobcloud` (as `ensure_pools` decides)."""
    from jobcloud.blocks.settings import get_settings

    chosen = {**parse_pool_types([], get_settings().pool_types, fill=False), **(named or {})}
    out = {}
    for pool in POOLS:
        kind = chosen.get(pool) or pool_type_of(client, pool)
        out[pool] = kind if kind in POOL_TYPES else DEFAULT_POOL_TYPE
    return out


def _hardware(entry: Any) -> tuple[float | None, int | None, int, int | None]:
    hw = entry.hardware.limits
    return hw.VCPU, hw.MEMORY, hw.GPU or 0, entry.hardware.timeout


def require_infra(catalog: Catalog, specs: list[DeploymentSpec], types: dict[str, str]) -> None:
    """Raise a UserError listing every entrypoint a pool's platform cannot run as the catalog
    asks (a GPU count, a timeout, a size); nothing is registered then."""
    problems = []
    for spec in specs:
        kind = types.get(spec.work_pool_name, DEFAULT_POOL_TYPE)
        cpu, memory, gpus, timeout = _hardware(catalog.get(spec.ref))
        for problem in check_infra(kind, gpus=gpus, timeout_s=timeout, cpu=cpu, memory_mb=memory):
            problems.append(f"{spec.ref} on pool {spec.work_pool_name} ({kind}): {problem}")
    if problems:
        raise UserError(
            "the catalog asks for what a pool's platform cannot give; nothing was deployed:\n"
            + "\n".join(f"  {p}" for p in sorted(set(problems)))
        )


def with_infra_variables(spec: DeploymentSpec, catalog: Catalog, pool_type: str) -> DeploymentSpec:
    """``spec`` with the job variables its pool's platform takes: the entrypoint's image as the
    run's image, its CPU, memory, GPUs and timeout in that platform's fields (none for the
    `jobcloud` type, whose flow starts the container itself)."""
    entry = catalog.get(spec.ref)
    cpu, memory, gpus, timeout = _hardware(entry)
    # A GPU entrypoint's deployment runs its CUDA image (`handler.gpu_image_url`, when it names one).
    infra = deployment_job_variables(pool_type, image_for(entry, gpus), cpu=cpu, memory_mb=memory, gpus=gpus, timeout_s=timeout)
    if not infra:
        return spec
    # prefect.yaml's own job variables (a scheduled deployment's) win over the catalog's.
    return spec.model_copy(update={"job_variables": _merge_variables(infra, spec.job_variables)})


def sync(
    catalog: Catalog,
    prune: bool = False,
    limits: dict[str, int | None] | None = None,
    prefect_yaml: Path | None = None,
    pool_types: dict[str, str] | None = None,
) -> list[DeployChange]:
    """Make pools, deployments and the zombie-run automation on the configured Prefect server
    match ``catalog``; ``pool_types`` names the worker type of pools (`--pool-type`)."""
    from prefect.client.orchestration import get_client

    specs = desired_deployments(catalog, prefect_yaml)
    zombie_after = zombie_after_s()  # a bad JOBCLOUD_ZOMBIE_AFTER_S fails before anything is written
    notify = notify_settings()  # so does a bad JOBCLOUD_NOTIFY_* / JOBCLOUD_SMTP_* setting
    with get_client(sync_client=True) as client:
        types = planned_pool_types(client, pool_types)
        # Everything a platform cannot give is said before anything is written.
        require_infra(catalog, specs, types)
        pool_changes: list[PoolChange] = ensure_pools(client, limits, pool_types=types)
        changes = [DeployChange(name=f"pool {c.name}", action=c.action, detail=c.detail) for c in pool_changes]
        specs = [with_infra_variables(spec, catalog, types.get(spec.work_pool_name, DEFAULT_POOL_TYPE)) for spec in specs]
        from jobcloud.deployments.deploy.tes import tes_deployments  # it builds on this module

        specs += tes_deployments(types)  # GA4GH TES tasks (docs/tes.md)
        # Server-side: crashes runs whose host died (their heartbeats stop); see automations.py.
        zombie = sync_zombie_automation(client, zombie_after)
        changes.append(DeployChange(name=f"automation {ZOMBIE_AUTOMATION}", action=zombie, detail=f"crash runs silent {zombie_after} s"))
        # Server-side: notifications when jobs finish or fail (webhook, email); see notifications.py.
        from jobcloud.blocks.settings import get_settings

        changes += [DeployChange(**c.model_dump()) for c in sync_notifications(client, notify, get_settings().storage_url)]
        changes += [_apply(client, spec) for spec in specs]
        wanted = {s.full_name for s in specs}
        changes += _prune(client, wanted) if prune else _stale(client, wanted)
    return changes


def render_prefect_yaml(catalog: Catalog, schedules_from: Path | None = None) -> str:
    """prefect.yaml for `prefect deploy --all`: the catalog's deployments plus the scheduled
    ones kept from ``schedules_from`` (an existing prefect.yaml)."""
    deployments = []
    for spec in catalog_deployments(catalog):
        deployments.append(
            {
                "name": spec.name,
                "entrypoint": spec.entrypoint,
                "version": spec.ref.version,
                "description": spec.description,
                "tags": spec.tags,
                "parameters": spec.parameters,
                "enforce_parameter_schema": True,
                "work_pool": {
                    "name": spec.work_pool_name,
                    "work_queue_name": spec.work_queue_name,
                    "job_variables": spec.job_variables,
                },
            }
        )
    if schedules_from is not None and schedules_from.exists():
        old = yaml.safe_load(schedules_from.read_text()) or {}
        for d in old.get("deployments") or []:
            if not d.get("schedules"):
                continue
            # A scheduled deployment carries its entrypoint's definition as it is now, as
            # `jobcloud deploy` writes it (`scheduled_deployments`).
            entrypoint = d.get("entrypoint", "")
            if entrypoint.startswith(ENTRYPOINT_PREFIX):
                ref = ref_of_attribute(entrypoint[len(ENTRYPOINT_PREFIX) :])
                pool = d.setdefault("work_pool", {}) or {}
                d["work_pool"] = pool
                pool["job_variables"] = _merge_variables(pool.get("job_variables") or {}, definition_variables(ref, catalog.get(ref)))
            deployments.append(d)
    doc = {
        "name": "jobcloud",
        "prefect-version": "3.8.8",
        "build": None,
        "push": None,
        # Entrypoints are module paths of the installed package: nothing to pull (see PULL_STEPS).
        "pull": PULL_STEPS,
        "deployments": deployments,
    }
    header = (
        "# Prefect's own deployment file for JobCloud: `prefect deploy --all` makes the same\n"
        "# deployments as `jobcloud deploy`. The catalog part is generated from\n"
        "# application_config.yaml: regenerate it with `jobcloud deploy --write-prefect-yaml`\n"
        "# (deployments with `schedules:` are kept). A test checks that both agree.\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, width=100)
