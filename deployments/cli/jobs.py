"""`jobcloud jobs`: list, show, logs, cancel and fetch the outputs of jobs on the server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from jobcloud.deployments.cli.output import human_size, out, print_json

# Imports inside the commands: Prefect only after `connect_api` (see local_server.ensure_api),
# and `jobcloud --help` stays quick.

jobs_app = typer.Typer(help="Jobs on the Prefect server: ls, show, logs, cancel, outputs.", no_args_is_help=True)

ARRAY_ROWS = 30  # elements `jobs show` prints for an array
STATE_COLOURS = {"Completed": "green", "Failed": "red", "Crashed": "red", "TimedOut": "red", "Cancelled": "yellow", "Running": "cyan"}


@contextmanager
def _client() -> Iterator[Any]:
    from jobcloud.deployments.jobs.submit import connect_api

    connect_api()
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        yield client


def _when(dt: Any) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S") if dt else "-"


@jobs_app.command("ls")
def ls_command(
    app: str | None = typer.Option(None, "--app", help="Only jobs of this application."),
    state: str | None = typer.Option(None, "--state", help="queued, running, finished, error, cancelled (or a Prefect state)."),
    limit: int = typer.Option(50, "--limit", min=1, max=200, help="At most this many, newest first."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """List jobs, newest first."""
    from jobcloud.deployments.jobs.show import list_jobs, state_types

    if state:
        state_types(state)  # a bad word fails before the server is contacted
    with _client() as client:
        jobs = list_jobs(client, app=app, state=state, limit=limit)
    if json_:
        print_json({"jobs": [j.model_dump(mode="json", exclude={"manifest"}) for j in jobs]})
        return
    from rich.table import Table

    table = Table("id", "application/version/entrypoint", "state", "created", "seconds")
    for j in jobs:
        colour = STATE_COLOURS.get(j.state, "white")
        secs = f"{j.run_seconds:.1f}" if j.run_seconds is not None else "-"
        table.add_row(j.id, j.ref, f"[{colour}]{j.state}[/]", _when(j.created), secs)
    out.print(table)


@jobs_app.command("show")
def show_command(
    job_id: str = typer.Argument(..., metavar="ID"),
    json_: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """State, phase, timings, parameters and outputs of one job."""
    from jobcloud.blocks.store.factory import store_from_settings
    from jobcloud.deployments.jobs.show import show_job

    with _client() as client:
        info = show_job(client, job_id, store_from_settings())
    if json_:
        print_json(info.model_dump(mode="json"))
        return
    colour = STATE_COLOURS.get(info.state, "white")
    out.print(f"job {info.id}  {info.ref}  [{colour}]{info.state}[/]" + (f" ({info.phase})" if info.phase else ""), highlight=False)
    if info.message:
        out.print(f"  message: {info.message}", markup=False, highlight=False)
    out.print(f"  created {_when(info.created)}  started {_when(info.started)}  ended {_when(info.ended)}", highlight=False)
    if info.parameters:
        out.print(f"  parameters: {info.parameters}", markup=False, highlight=False)
    if info.array:
        _show_array(info.array)
    manifest = info.manifest or {}
    if manifest.get("timings"):
        out.print("  timings: " + ", ".join(f"{k} {v}" for k, v in manifest["timings"].items()), highlight=False)
    for o in manifest.get("outputs", []):
        out.print(f"  {human_size(o['size']):>10}  {o['key']}", highlight=False)
    out.print(f"  outputs: {info.outputs}/  (jobcloud jobs outputs {info.id} DIR)", highlight=False)


def _show_array(array: dict[str, Any]) -> None:
    """A job array's counts, then its elements: those that did not complete first."""
    from rich.table import Table

    from jobcloud.flows.array_manifest import counts_text

    out.print(f"  array {array['array_id']}: {counts_text(array['counts'], array['total'])}", highlight=False)
    rows = sorted(array["elements"], key=lambda e: (e["state"] == "Completed", e["index"]))
    table = Table("index", "state", "seconds", "exit code", "files", "message")
    for e in rows[:ARRAY_ROWS]:
        colour = STATE_COLOURS.get(e["state"], "white")
        code = "-" if e["exit_code"] is None else str(e["exit_code"])
        table.add_row(str(e["index"]), f"[{colour}]{e['state']}[/]", f"{e['seconds']:.1f}", code, str(e["files"]), e["message"] or "")
    out.print(table)
    if len(rows) > ARRAY_ROWS:
        out.print(f"  ... {len(rows) - ARRAY_ROWS} more (--json for all, or jobs/{array['array_id']}/array.json)", highlight=False)


@jobs_app.command("logs")
def logs_command(job_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Print the job's log: the flow's messages and the container's output."""
    from jobcloud.deployments.jobs.show import job_logs

    with _client() as client:
        lines = job_logs(client, job_id)
    for ts, level, message in lines:
        print(f"{ts:%H:%M:%S} {level:<7} {message}")


@jobs_app.command("cancel")
def cancel_command(job_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Cancel a queued or running job."""
    from jobcloud.deployments.jobs.show import cancel_job

    with _client() as client:
        state = cancel_job(client, job_id)
    out.print(f"job {job_id} {state}", highlight=False)


@jobs_app.command("outputs")
def outputs_command(job_id: str = typer.Argument(..., metavar="ID"), dest: Path = typer.Argument(..., metavar="DIR")) -> None:
    """Download the job's files (output/, log/, artifact/, manifest.json) into DIR."""
    from jobcloud.blocks.store.factory import store_from_settings
    from jobcloud.deployments.jobs.show import download_outputs

    records = download_outputs(store_from_settings(), job_id, dest)
    total = sum(r.size for r in records)
    out.print(f"{len(records)} files, {human_size(total)} into {dest}", highlight=False)
