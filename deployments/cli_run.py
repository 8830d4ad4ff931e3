"""`jobcloud run`: start one job and wait for its final state."""

from __future__ import annotations

from typing import List, Optional

import typer

from deployments.cli_output import err, human_size, out, print_json
from blocks.errors import ParameterError


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
    config: Optional[str] = typer.Option(None, "--config", help="Key of the configuration."),
    data: List[str] = typer.Option([], "--data", help="Key of a data input (repeatable)."),
    artifact: List[str] = typer.Option([], "--artifact", help="Key of an artifact, e.g. jobs/<id>/artifact (repeatable)."),
    env: List[str] = typer.Option([], "--env", help="NAME=VALUE for an allow-listed variable (repeatable)."),
    secret: List[str] = typer.Option([], "--secret", help="NAME=BLOCK: secret variable NAME gets the value of Prefect Secret block BLOCK (repeatable)."),
    cpu: Optional[float] = typer.Option(None, "--cpu", min=0.01, help="CPU cores (overrides VCPU)."),
    memory: Optional[int] = typer.Option(None, "--memory", min=6, help="Memory limit in MB (overrides MEMORY)."),
    gpu: Optional[int] = typer.Option(None, "--gpu", min=0, help="GPUs (overrides GPU)."),
    timeout: Optional[int] = typer.Option(None, "--timeout", min=1, help="Seconds before the job is stopped."),
    local: bool = typer.Option(False, "--local", help="Run in this process against a local Prefect."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Print the job id and return at once (server mode)."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON object (id, state, outputs, manifest)."),
    priority: int = typer.Option(0, "--priority", min=0, max=5, help="0 (default) to 5 (most urgent): the pool's queue priority-N (server mode)."),
) -> int:
    """Run one job. Exit 0 if it Completed, 1 if it ended otherwise, 2 on bad input."""
    from blocks.store.factory import store_from_settings
    from flows.catalog import EntrypointRef, load_catalog
    from flows.request import HardwareOverride, JobRequest, validate_request

    ref = EntrypointRef.parse(entrypoint)
    entry = load_catalog().get(ref)
    hardware = None
    if any(v is not None for v in (cpu, memory, gpu)):
        hardware = HardwareOverride(cpu=cpu, memory=memory, gpu=gpu)
    request = validate_request(
        entry,
        JobRequest(
            config_id=config,
            data_ids=list(data),
            artifact_ids=list(artifact),
            env=parse_env(list(env)),
            secrets=parse_env(list(secret), "--secret", "BLOCK"),
            hardware=hardware,
            timeout=timeout,
        ),
    )
    store = store_from_settings()
    for _, key in request.inputs():
        store.require(key)
    if entry.app.secrets:
        # A missing Secret block is bad input: exit 2 before any flow run exists.
        from deployments.submit import connect_api
        from flows.request import secret_blocks

        connect_api()  # before Prefect is imported (see local_server.ensure_api)
        from flows.secrets import require_secret_blocks

        require_secret_blocks(secret_blocks(entry, request))
    if not local:
        from deployments.submit import submit_and_report

        return submit_and_report(ref, entry, request, wait=not no_wait, as_json=json_, priority=priority)
    if no_wait:
        raise ParameterError("--no-wait needs a server: drop --local, or drop --no-wait")

    from deployments.run_local import run_local

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
