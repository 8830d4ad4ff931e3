"""The Python API for notebooks and scripts.

    from jobcloud import submit, wait, show, cancel, outputs
    job = submit("linefit/v1/train", config="examples/config.yaml", data=["examples/points.csv"])
    job.wait()                  # the final state: "Completed", "Failed", ...
    job.outputs()               # keys of the uploaded files
    job.outputs("results/")     # or download them
    print(job.logs())
    wait(job.id); show(job.id); outputs(job.id, "results/"); cancel(job.id)   # by id, later

Jobs go to the deployment on the configured Prefect server (`PREFECT_API_URL`, else JobCloud's
local server), exactly like `jobcloud run` without `--local`. Only synchronous client calls are
made, so it works inside Jupyter's running event loop too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jobcloud.deployments.jobs.result import JobResult
from jobcloud.deployments.pools.work_pools import DEFAULT_PRIORITY
from jobcloud.flows.request import HardwareOverride, JobRequest

# Prefect and the job store are imported inside the calls: `connect_api` decides the API first.


def _client() -> Any:
    from jobcloud.deployments.jobs.submit import connect_api

    connect_api()
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


class Job:
    """A submitted job; every property asks the server again."""

    def __init__(self, job_id: str, entrypoint: str) -> None:
        self.id = job_id
        self.entrypoint = entrypoint
        self._result: JobResult | None = None

    def __repr__(self) -> str:
        return f"Job({self.id!r}, {self.entrypoint!r}, state={self.state!r})"

    @property
    def state(self) -> str:
        """The job's state now: Scheduled, Pending, Running, Completed, Failed, ..."""
        return self.info().state if self._result is None else self._result.state

    def info(self) -> Any:
        """Everything `jobcloud jobs show` reports, as a `JobInfo`."""
        from jobcloud.blocks.store.factory import store_from_settings
        from jobcloud.deployments.jobs.show import show_job

        with _client() as client:
            return show_job(client, self.id, store_from_settings())

    def wait(self, timeout: float | None = None) -> str:
        """Block until the job ends; returns its final state (raises after ``timeout`` s)."""
        from jobcloud.blocks.store.factory import store_from_settings
        from jobcloud.deployments.jobs.submit import result_of, wait_for

        if self._result is None:
            with _client() as client:
                run = wait_for(client, self.id, timeout=timeout)
            self._result = result_of(run, store_from_settings())
        return self._result.state

    @property
    def result(self) -> JobResult:
        """The finished job (id, state, message, outputs prefix, manifest); waits for it."""
        self.wait()
        assert self._result is not None
        return self._result

    def outputs(self, dest: str | Path | None = None) -> list[str]:
        """Keys of the job's uploaded files; with ``dest``, also download them there."""
        manifest = self.result.manifest or {}
        keys = [o["key"] for o in manifest.get("outputs", [])]
        if dest is not None:
            from jobcloud.blocks.store.factory import store_from_settings
            from jobcloud.deployments.jobs.show import download_outputs

            download_outputs(store_from_settings(), self.id, Path(dest))
        return keys

    def logs(self) -> str:
        """The job's log so far (flow messages and the container's output)."""
        from jobcloud.deployments.jobs.show import job_logs

        with _client() as client:
            return "\n".join(message for _, _, message in job_logs(client, self.id))

    def cancel(self) -> str:
        """Cancel the job; returns the state it was put in."""
        from jobcloud.deployments.jobs.show import cancel_job

        with _client() as client:
            return cancel_job(client, self.id)


def submit(
    entrypoint: str,
    config: str | None = None,
    data: Iterable[str] = (),
    artifacts: Iterable[str] = (),
    env: dict[str, str] | None = None,
    cpu: float | None = None,
    memory: int | None = None,
    gpu: int | None = None,
    timeout: int | None = None,
    priority: int = DEFAULT_PRIORITY,
) -> Job:
    """Submit a job to ``entrypoint`` ("APP/VERSION/ENTRYPOINT") and return its handle at once.

    Parameters are checked against the catalog, and the inputs (in the job store) and Secret
    blocks must exist, before anything is created (a `jobcloud.blocks.errors.UserError` says what is wrong).
    """
    from jobcloud.blocks.store.factory import store_from_settings
    from jobcloud.deployments.jobs.submit import connect_api
    from jobcloud.deployments.jobs.submit import submit as submit_run
    from jobcloud.flows.catalog import EntrypointRef, load_catalog
    from jobcloud.flows.request import check_request

    ref = EntrypointRef.parse(entrypoint)
    entry = load_catalog().get(ref)
    hardware = HardwareOverride(cpu=cpu, memory=memory, gpu=gpu) if any(v is not None for v in (cpu, memory, gpu)) else None
    # The same checks as `jobcloud run` (`check_request`): the request, its inputs in the store,
    # its Secret blocks (looked up once connect_api has fixed Prefect's API).
    request = check_request(
        entry,
        JobRequest(config_id=config, data_ids=list(data), artifact_ids=list(artifacts), env=env or {}, hardware=hardware, timeout=timeout),
        store_from_settings(),
        before_secrets=connect_api,
    )
    with _client() as client:
        run = submit_run(client, ref, request, priority)
    return Job(str(run.id), str(ref))


def job(job_id: str) -> Job:
    """The handle of an existing job (its flow run id), e.g. one submitted by the CLI."""
    from jobcloud.deployments.jobs.show import info_of, read_run

    with _client() as client:
        info = info_of(read_run(client, job_id))
    return Job(info.id, info.ref)


def wait(job_id: str, timeout: float | None = None) -> str:
    """Block until job ``job_id`` ends; returns its final state (raises after ``timeout`` s)."""
    return job(job_id).wait(timeout)


def show(job_id: str) -> Any:
    """Everything `jobcloud jobs show` reports about ``job_id``, as a `JobInfo`."""
    return job(job_id).info()


def cancel(job_id: str) -> str:
    """Cancel job ``job_id``; returns the state it was put in."""
    return job(job_id).cancel()


def outputs(job_id: str, dest: str | Path | None = None) -> list[str]:
    """Keys of job ``job_id``'s uploaded files (waits for it); with ``dest``, downloads them."""
    return job(job_id).outputs(dest)
