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

from jobcloud.blocks.errors import ParameterError
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


class Array:
    """A submitted job array: its id (the key of its files, jobs/<id>/), its flow runs (one
    per shard) and its elements' counts."""

    def __init__(self, array_id: str, run_ids: list[str], entrypoint: str, total: int) -> None:
        self.id = array_id
        self.runs = [Job(r, entrypoint) for r in run_ids]
        self.entrypoint = entrypoint
        self.total = total

    def __repr__(self) -> str:
        return f"Array({self.id!r}, {self.entrypoint!r}, elements={self.total}, runs={len(self.runs)})"

    def wait(self, timeout: float | None = None) -> str:
        """Block until every run of the array ends: "Completed" when every element did, else the
        first run's state that is not (raises after ``timeout`` s)."""
        states = [run.wait(timeout) for run in self.runs]
        return next((s for s in states if s != "Completed"), "Completed")

    def elements(self) -> list[dict[str, Any]]:
        """One row per element so far (index, state, seconds, exit_code, files, manifest, ...)."""
        return self.record()["elements"]

    def record(self) -> dict[str, Any]:
        """The array's record: counts by state, total and elements (jobs/<id>/array.json)."""
        from jobcloud.blocks.store.factory import store_from_settings
        from jobcloud.flows.array_manifest import merged_manifest
        from jobcloud.flows.catalog import EntrypointRef

        return merged_manifest(store_from_settings(), self.id, EntrypointRef.parse(self.entrypoint), self.total).model_dump(mode="json")

    def outputs(self, dest: str | Path) -> int:
        """Download every element's files (jobs/<id>/<index>/...) and the array's record into ``dest``;
        the number of files."""
        from jobcloud.blocks.store.factory import store_from_settings
        from jobcloud.deployments.jobs.show import download_outputs

        return len(download_outputs(store_from_settings(), self.id, Path(dest)))


def submit_array(
    entrypoint: str,
    rows: Iterable[dict[str, Any]] | str | Path | None = None,
    *,
    over: str | None = None,
    retry_failed: str | None = None,
    config: str | None = None,
    data: Iterable[str] = (),
    artifacts: Iterable[str] = (),
    env: dict[str, str] | None = None,
    timeout: int | None = None,
    parallel: int = 0,
    shards: int | None = None,
    max_failures: int = 0,
    priority: int = DEFAULT_PRIORITY,
) -> Array:
    """Submit a job array to ``entrypoint``: one element per row (a list of dicts of job
    parameters, or the path of a .csv/.jsonl/.yaml file), per entry under the store prefix
    ``over``, or per element of array ``retry_failed`` that did not complete. The other
    parameters are every element's defaults; a row's values win. Every row is checked before
    anything is submitted (`jobcloud run --array` does the same)."""
    from jobcloud.blocks.store.factory import store_from_settings
    from jobcloud.deployments.jobs.arrays import plan_array, read_array_file, retry_rows, rows_over
    from jobcloud.deployments.jobs.arrays import submit_array as submit_runs
    from jobcloud.deployments.jobs.submit import connect_api
    from jobcloud.flows.catalog import EntrypointRef, load_catalog

    ref = EntrypointRef.parse(entrypoint)
    entry = load_catalog().get(ref)
    store = store_from_settings()
    if sum(x is not None for x in (rows, over, retry_failed)) != 1:
        raise ParameterError("give exactly one of rows, over and retry_failed")
    if isinstance(rows, (str, Path)):
        found = read_array_file(Path(rows))
    elif rows is not None:
        found = [dict(r) for r in rows]
    elif over is not None:
        found = rows_over(store, over)
    else:
        found = retry_rows(store, str(retry_failed))
    base = JobRequest(config_id=config, data_ids=list(data), artifact_ids=list(artifacts), env=env or {}, timeout=timeout)
    plan = plan_array(
        entry,
        base,
        found,
        store,
        parallel=parallel,
        shards=shards,
        max_failures=max_failures,
        array_id=retry_failed,
        before_secrets=connect_api,
    )
    with _client() as client:
        array_id, runs = submit_runs(client, ref, plan, priority)
    return Array(array_id, [str(r.id) for r in runs], str(ref), plan.total)
