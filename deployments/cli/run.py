"""`jobcloud run`: start one job and wait for its final state.

Imports of what runs a job (the store, Prefect, the engine) sit inside the command: `jobcloud
--help` and every other command import this module, and Prefect must not be imported before
`connect_api` has fixed which API it talks to (see `local_server.ensure_api`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from jobcloud.blocks.errors import ParameterError
from jobcloud.deployments.cli.output import err, human_size, out, print_json
from jobcloud.deployments.pools.work_pools import DEFAULT_PRIORITY, queue_name

if TYPE_CHECKING:
    from jobcloud.flows.catalog import Entrypoint, EntrypointRef
    from jobcloud.flows.request import JobRequest


def parse_env(pairs: list[str], option: str = "--env", value_word: str = "VALUE") -> dict[str, str]:
    """NAME=VALUE pairs into a dict; the value may contain '=' and anything else."""
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ParameterError(f"{option} {pair!r} is not NAME={value_word}")
        env[name] = value
    return env


def run_command(
    entrypoint: str = typer.Argument(..., metavar="APP/VERSION/ENTRYPOINT", help="What to run (see `jobcloud apps`)."),
    config: str | None = typer.Option(None, "--config", help="Key of the configuration."),
    data: list[str] = typer.Option([], "--data", help="Key of a data input (repeatable)."),
    artifact: list[str] = typer.Option([], "--artifact", help="Key of an artifact, e.g. jobs/<id>/artifact (repeatable)."),
    env: list[str] = typer.Option([], "--env", help="NAME=VALUE for an allow-listed variable (repeatable)."),
    secret: list[str] = typer.Option(
        [], "--secret", help="NAME=BLOCK: secret variable NAME gets the value of Prefect Secret block BLOCK (repeatable)."
    ),
    cpu: float | None = typer.Option(None, "--cpu", min=0.01, help="CPU cores (overrides VCPU)."),
    memory: int | None = typer.Option(None, "--memory", min=6, help="Memory limit in MB (overrides MEMORY)."),
    gpu: int | None = typer.Option(None, "--gpu", min=0, help="GPUs (overrides GPU)."),
    timeout: int | None = typer.Option(None, "--timeout", min=1, help="Seconds before the job is stopped."),
    callback_url: str | None = typer.Option(
        None, "--callback-url", metavar="URL", help="http(s) URL that gets a JSON status update (PATCH) at each phase and at the end."
    ),
    local: bool = typer.Option(False, "--local", help="Run in this process against a local Prefect."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Print the job id and return at once (server mode)."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON object (id, state, outputs, manifest)."),
    priority: int = typer.Option(
        0, "--priority", min=0, max=5, help="0 (default) to 5 (most urgent): the pool's queue priority-N (server mode)."
    ),
    array: Path | None = typer.Option(
        None,
        "--array",
        metavar="FILE",
        help="A job array: one element per row of FILE (.csv, .jsonl or .yaml; columns = job parameters, a row's value wins).",
    ),
    array_over: str | None = typer.Option(
        None, "--array-over", metavar="PREFIX", help="A job array: one element per file or folder under PREFIX, as its --data."
    ),
    retry_failed: str | None = typer.Option(
        None, "--retry-failed", metavar="ARRAY_ID", help="Run the elements of array ARRAY_ID that did not complete, again."
    ),
    parallel: int = typer.Option(0, "--parallel", min=0, help="Array: at most N elements at once (default: what the host holds)."),
    shards: int | None = typer.Option(None, "--shards", min=1, help="Array: split into K flow runs for K workers (default: 1 per 1,000)."),
    max_failures: int = typer.Option(0, "--max-failures", min=0, help="Array: start no new element after M failures (0: never stop)."),
) -> int:
    """Run one job, or a job array. Exit 0 if it Completed, 1 if it ended otherwise, 2 on bad input."""
    from jobcloud.blocks.store.factory import store_from_settings
    from jobcloud.deployments.jobs.submit import connect_api
    from jobcloud.flows.catalog import EntrypointRef, load_catalog
    from jobcloud.flows.request import HardwareOverride, JobRequest, check_request

    ref = EntrypointRef.parse(entrypoint)
    entry = load_catalog().get(ref)
    hardware = None
    if any(v is not None for v in (cpu, memory, gpu)):
        hardware = HardwareOverride(cpu=cpu, memory=memory, gpu=gpu)
    store = store_from_settings()
    # Not yet checked: an array's rows may give what the command line leaves out.
    given = JobRequest(
        config_id=config,
        data_ids=list(data),
        artifact_ids=list(artifact),
        env=parse_env(list(env)),
        secrets=parse_env(list(secret), "--secret", "BLOCK"),
        hardware=hardware,
        timeout=timeout,
        callback_url=callback_url,
    )
    if array is not None or array_over is not None or retry_failed is not None:
        from jobcloud.deployments.cli.arrays import rows_from_options, run_array

        if local:
            raise ParameterError("a job array runs on a server's workers: drop --local")
        rows = rows_from_options(store, array, array_over, retry_failed)
        return run_array(
            ref,
            entry,
            given,
            rows,
            parallel=parallel,
            shards=shards,
            max_failures=max_failures,
            array_id=retry_failed,
            wait=not no_wait,
            as_json=json_,
            priority=priority,
        )
    if parallel or shards or max_failures:
        raise ParameterError("--parallel, --shards and --max-failures are for a job array: add --array FILE or --array-over PREFIX")
    # Every check, once, before anything starts (a bad input exits 2); the flow takes the
    # checked request as it is (--local) or checks a deployment's run itself.
    request = check_request(
        entry,
        given,
        store,
        # Secret blocks are looked up through Prefect, imported only once connect_api has fixed
        # its API (see local_server.ensure_api); a missing block exits 2 too.
        before_secrets=connect_api,
    )
    if not local:
        return submit_and_report(ref, entry, request, wait=not no_wait, as_json=json_, priority=priority)
    if no_wait:
        raise ParameterError("--no-wait needs a server: drop --local, or drop --no-wait")

    from jobcloud.deployments.jobs.run_local import run_local

    # run_local checks the engine, the GPUs asked for and the image before any flow run exists.
    result = run_local(ref, entry, request, store)
    report(result, as_json=json_)
    return 0 if result.ok else 1


def report(result, as_json: bool) -> None:
    """Print a finished job: one JSON object, or a short summary with its outputs."""
    if as_json:
        print_json(result.as_json())
        return
    colour = "green" if result.ok else "red"
    out.print(f"job {result.id} [bold {colour}]{result.state}[/]")
    if result.message and not result.ok:
        err.print(result.message, markup=False, highlight=False)
    if result.manifest:
        for o in result.manifest.get("outputs", []):
            out.print(f"  {human_size(o['size']):>10}  {o['key']}", highlight=False)
    out.print(f"outputs: {result.outputs}/  (jobcloud files get {result.outputs} DIR)", highlight=False)


def submit_and_report(
    ref: EntrypointRef,
    entry: Entrypoint,
    request: JobRequest,
    wait: bool,
    as_json: bool,
    priority: int = DEFAULT_PRIORITY,
) -> int:
    """Submit to the deployment `<application>-<entrypoint>/<version>`; wait unless told not to.

    Exit code: 0 Completed (or submitted with --no-wait), 1 any other final state.
    """
    from jobcloud.blocks.store.factory import store_from_settings
    from jobcloud.deployments.jobs.result import state_label
    from jobcloud.deployments.jobs.submit import connect_api, deployment_name, result_of, submit, wait_for
    from jobcloud.flows.manifest import job_prefix

    api = connect_api()
    # Prefect is imported once connect_api has fixed which API it talks to.
    from prefect.client.orchestration import get_client

    queue_name(priority)  # a bad priority fails before anything is created
    with get_client(sync_client=True) as client:
        run = submit(client, ref, request, priority)
        if not wait:
            if as_json:
                print_json({"id": str(run.id), "state": state_label(run.state), "outputs": job_prefix(str(run.id)), "manifest": None})
            else:
                print(run.id)
            return 0
        if not as_json:
            err.print(f"submitted job {run.id} to {deployment_name(ref)} ({queue_name(priority)}) at {api}", highlight=False)
        try:
            final = wait_for(
                client,
                run.id,
                on_state=None if as_json else lambda s: err.print(f"  {s.name}", highlight=False),
                on_still_queued=lambda: err.print(
                    f"  still waiting for a worker on pool {entry.pool!r}: start one with "
                    f"`prefect worker start --pool {entry.pool}` (Ctrl-C stops waiting, the job stays queued)",
                    highlight=False,
                ),
            )
        except KeyboardInterrupt:
            err.print(f"stopped waiting; the job goes on. Cancel it with: jobcloud jobs cancel {run.id}")
            raise
    result = result_of(final, store_from_settings())
    report(result, as_json=as_json)
    return 0 if result.ok else 1
