"""Submitting jobs to deployments on a Prefect server (`jobcloud run` without `--local`).

A job is a flow run of deployment `<application>-<entrypoint>/<application>-<version>-<entrypoint>`
(e.g. `linefit-train/linefit-v1-train`), created with the job parameters the entrypoint takes
on the pool's queue `priority-<n>`; the flow run inherits the deployment's tags (`app:`,
`version:`, `entrypoint:`). The same run can be made with
`prefect deployment run 'linefit-train/linefit-v1-train' --param ...`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from jobcloud.blocks.errors import JobCloudError, ParameterError, UserError
from jobcloud.deployments.jobs.landing import land, new_idempotency_key
from jobcloud.deployments.jobs.result import JobResult, result_for
from jobcloud.deployments.pools.resources import check_infra, deployment_job_variables
from jobcloud.deployments.pools.types import is_in_container
from jobcloud.deployments.pools.work_pools import DEFAULT_PRIORITY, pool_type_of, queue_name
from jobcloud.deployments.server.local_server import ensure_api
from jobcloud.deployments.server.processes import healthy
from jobcloud.flows.array_request import ArrayRequest
from jobcloud.flows.catalog import EntrypointRef
from jobcloud.flows.container_spec import image_for
from jobcloud.flows.definition import deployed_entry
from jobcloud.flows.request import JobRequest

POLL_S = 0.5


class DeploymentMissingError(UserError):
    """The entrypoint has no deployment on the server yet."""


def connect_api() -> str:
    """The Prefect API to use (see `local_server.ensure_api`), checked to answer."""
    api = ensure_api()
    if not healthy(api):
        raise JobCloudError(
            f"the Prefect server at {api} does not answer; start it (`prefect server start`) or point PREFECT_API_URL at a running one"
        )
    return api


def deployment_name(ref: EntrypointRef) -> str:
    """`<flow>/<deployment>` (`linefit-train/linefit-v1-train`), as `prefect deployment run` takes it."""
    return ref.deployment_full_name


def parameters_of(request: JobRequest) -> dict[str, Any]:
    """The flow-run parameters of a request (unset ones left out: the flow's defaults apply)."""
    return request.model_dump(mode="json", exclude_none=True, exclude_defaults=True)


def submit(
    client: Any,
    ref: EntrypointRef,
    request: JobRequest,
    priority: int = DEFAULT_PRIORITY,
    extra_tags: list[str] | None = None,
    array: ArrayRequest | None = None,
) -> Any:
    """Create the flow run; returns Prefect's `FlowRun`. ``extra_tags`` join the entrypoint's
    (the HTTP API adds `user:<name>`, the owner). ``array``: the run is (a shard of) a job array.

    A server busy with other submissions is asked again until `JOBCLOUD_SUBMIT_PATIENCE_S` is
    spent (`landing.land`), every attempt with the same idempotency key: a create that landed
    but whose answer was lost is returned, never made twice."""
    from jobcloud.blocks.settings import get_settings

    queue = queue_name(priority)  # a bad priority fails before anything is sent
    key = new_idempotency_key()
    return land(
        lambda: _create(client, ref, request, queue, extra_tags or [], array, key),
        api_url_of(client),
        get_settings().submit_patience_s,
    )


def _create(
    client: Any, ref: EntrypointRef, request: JobRequest, queue: str, extra_tags: list[str], array: ArrayRequest | None, key: str
) -> Any:
    """One attempt of `submit`: read the deployment, then create the run under ``key``."""
    # Prefect is imported only once the API is fixed (local_server.ensure_api), here and below.
    from prefect.exceptions import ObjectNotFound

    try:
        deployment = client.read_deployment_by_name(deployment_name(ref))
    except ObjectNotFound:
        raise DeploymentMissingError(
            f"no deployment {deployment_name(ref)!r} on the Prefect server; run `jobcloud deploy` (or add --local to run here)"
        ) from None
    return client.create_flow_run_from_deployment(
        deployment.id,
        parameters={**parameters_of(request), **({"array": array.model_dump(mode="json")} if array else {})},
        tags=[*ref.tags, *extra_tags],
        work_queue_name=queue,
        job_variables=override_variables(client, ref, deployment, request) or None,
        idempotency_key=key,
    )


def api_url_of(client: Any) -> str:
    """The API a Prefect client talks to, for messages (PREFECT_API_URL for a client without one)."""
    url = getattr(client, "api_url", None) or os.environ.get("PREFECT_API_URL") or "(PREFECT_API_URL)"
    return str(url).rstrip("/")


def override_variables(client: Any, ref: EntrypointRef, deployment: Any, request: JobRequest) -> dict[str, Any]:
    """Per-run job variables that carry a job's `hardware`/`timeout` override to the
    infrastructure of an in-container pool (a pod's limits, a task's size); empty otherwise.

    The flow itself applies the override on `jobcloud` pools (it starts the container)."""
    if request.hardware is None and request.timeout is None:
        return {}
    pool_type = pool_type_of(client, deployment.work_pool_name)
    if pool_type is None or not is_in_container(pool_type):
        return {}
    entry = deployed_entry(ref, (deployment.job_variables or {}).get("env") or {})
    if entry is None:
        return {}
    hw, override = entry.hardware.limits, request.hardware
    cpu = override.cpu if override and override.cpu is not None else hw.VCPU
    memory = override.memory if override and override.memory is not None else hw.MEMORY
    gpus = override.gpu if override and override.gpu is not None else hw.GPU
    timeout = request.timeout or entry.hardware.timeout
    problems = check_infra(pool_type, gpus=gpus or 0, timeout_s=timeout, cpu=cpu, memory_mb=memory)
    if problems:
        raise ParameterError(f"{ref} on pool {deployment.work_pool_name} ({pool_type}): " + "; ".join(problems))
    return deployment_job_variables(pool_type, image_for(entry, gpus or 0), cpu=cpu, memory_mb=memory, gpus=gpus or 0, timeout_s=timeout)


def wait_for(
    client: Any,
    run_id: Any,
    timeout: float | None = None,
    on_state: Callable[[Any], None] | None = None,
    on_still_queued: Callable[[], None] | None = None,
    queued_hint_s: float = 30.0,
) -> Any:
    """Poll the flow run until it is in a final state; returns the final `FlowRun`.

    ``on_still_queued`` is called once if the run is still Scheduled after ``queued_hint_s``.
    """
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    last = None
    while True:
        run = client.read_flow_run(run_id)
        if on_still_queued and run.state and run.state.is_scheduled() and time.monotonic() - started > queued_hint_s:
            on_still_queued()
            on_still_queued = None
        if run.state and run.state.name != last:
            last = run.state.name
            if on_state:
                on_state(run.state)
        if run.state and run.state.is_final():
            return run
        if deadline is not None and time.monotonic() > deadline:
            raise JobCloudError(f"job {run_id} is still {last} after {timeout} s")
        time.sleep(POLL_S)


def result_of(run: Any, store: Any) -> JobResult:
    """A finished flow run as a `JobResult` (the shape `jobcloud run --json` prints)."""
    return result_for(str(run.id), run.state, store)
