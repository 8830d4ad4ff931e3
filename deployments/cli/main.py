"""The `jobcloud` command line. Exit codes: 0 success (a job Completed), 1 a job ended in any
other state or the platform failed, 2 bad usage or bad input (nothing was started)."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from pathlib import Path

import click
import typer

from jobcloud.blocks.errors import JobCloudError, UserError
from jobcloud.deployments.cli.deploy import deploy_command
from jobcloud.deployments.cli.files import files_app
from jobcloud.deployments.cli.images import images_app
from jobcloud.deployments.cli.jobs import jobs_app
from jobcloud.deployments.cli.output import err, out, print_json
from jobcloud.deployments.cli.pipelines import pipelines_app
from jobcloud.deployments.cli.run import run_command
from jobcloud.deployments.cli.serve import api_app

# Imports of what a command needs (the catalog, the engine, Prefect) sit inside it: every
# `jobcloud` call imports this module, `--help` included, and Prefect must wait for
# `connect_api` (see local_server.ensure_api).

app = typer.Typer(
    name="jobcloud",
    help="Run containerized scientific applications as Prefect jobs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(files_app, name="files")
app.add_typer(images_app, name="images")
app.command("run")(run_command)
app.command("deploy")(deploy_command)
app.add_typer(jobs_app, name="jobs")
app.add_typer(pipelines_app, name="pipelines")
app.add_typer(api_app, name="api")
server_app = typer.Typer(help="JobCloud's local Prefect server (used by `run --local`).", no_args_is_help=True)
app.add_typer(server_app, name="server")


@app.command("apps")
def apps_command(
    json_: bool = typer.Option(False, "--json", help="Print one JSON object."),
    config: Path | None = typer.Option(None, "--catalog", help="Catalog file (default: JOBCLOUD_CONFIG or ./application_config.yaml)."),
) -> None:
    """List application/version/entrypoint, image, pool and timeout."""
    from jobcloud.flows.catalog import load_catalog

    catalog = load_catalog(config)
    rows = [
        {
            "application": ref.application,
            "version": ref.version,
            "entrypoint": ref.entrypoint,
            "image": entry.handler.image_url,
            "pool": entry.pool,
            "timeout": entry.hardware.timeout,
            "env": list(entry.app.env),
            "description": entry.description,
        }
        for ref, entry in catalog.entries()
    ]
    if json_:
        print_json({"catalog": catalog.source, "entrypoints": rows})
        return
    from rich.table import Table

    table = Table("application/version/entrypoint", "image", "pool", "timeout", title=catalog.source)
    for r in rows:
        table.add_row(f"{r['application']}/{r['version']}/{r['entrypoint']}", r["image"], r["pool"], str(r["timeout"] or "-"))
    out.print(table)


@app.command("check")
def check_command(
    file: Path | None = typer.Argument(None, help="Catalog file (default: JOBCLOUD_CONFIG or ./application_config.yaml)."),
) -> None:
    """Validate a catalog; exit 2 with every problem named if it is invalid.

    Entrypoints on in-container pools (JOBCLOUD_POOL_TYPES, e.g. `cpu=docker`) whose image is here
    and cannot run the flow inside it are an error (exit 2; `jobcloud images wrap IMAGE` fixes
    that); an image not here gets a warning (the pools' hosts may have it).
    """
    from jobcloud.blocks.settings import get_settings
    from jobcloud.deployments.pools.in_container import in_container_uses, in_container_warnings
    from jobcloud.deployments.pools.types import parse_pool_types
    from jobcloud.flows.catalog import load_catalog

    catalog = load_catalog(file)
    entries = list(catalog.entries())
    out.print(f"{catalog.source}: ok ({len(catalog.applications)} applications, {len(entries)} entrypoints)")
    # Only with in-container pools does check talk to the engine (a probe is ~2 s per image).
    uses = in_container_uses(catalog, parse_pool_types([], get_settings().pool_types))
    unfit = 0
    for warning in in_container_warnings(uses):
        # An image here that cannot run in-container is bad input (exit 2); one that is not
        # here, or no engine, only a warning: the pools' hosts may have it.
        bad = " cannot run in-container (" in warning
        unfit += bad
        err.print("[red]error:[/] " if bad else "[yellow]warning:[/] ", end="")
        err.print(warning, markup=False, highlight=False)
    from jobcloud.deployments.imaging.gpu_check import report_gpu_images  # GPU images that cannot use CUDA

    report_gpu_images(catalog, err)
    if unfit:
        raise typer.Exit(2)


@server_app.command("start")
def server_start() -> None:
    """Start the local Prefect server (UI and API) unless it runs."""
    from jobcloud.deployments.server.local_server import start

    url = start()
    out.print(f"Prefect API {url}  UI {url.removesuffix('/api')}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the local Prefect server."""
    from jobcloud.deployments.server.local_server import stop

    out.print("stopped" if stop() else "not running")


@server_app.command("status")
def server_status() -> None:
    """Say whether the local Prefect server runs, and where."""
    from jobcloud.deployments.server.local_server import running_url

    url = running_url()
    out.print(f"running at {url}" if url else "not running")
    raise typer.Exit(0 if url else 1)


@app.command("sweep")
def sweep_command(
    json_: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Remove containers and work folders of jobs whose runs have ended (or that the server
    does not know). Running and queued jobs are never touched."""
    from jobcloud.deployments.jobs.submit import connect_api
    from jobcloud.flows.sweeper import sweep_here

    connect_api()
    report = sweep_here()
    if json_:
        print_json(asdict(report))
        return
    out.print(
        f"removed {len(report.containers_removed)} container(s) and {len(report.folders_removed)} "
        f"work folder(s) of ended jobs; {report.kept} of live jobs kept",
        highlight=False,
    )
    for line in report.errors:
        err.print(line, markup=False, highlight=False)


def _say(prefix: str, exc: BaseException) -> None:
    err.print(f"[bold red]{prefix}:[/] ", end="")
    err.print(str(exc), markup=False, highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `jobcloud` command; returns the exit code."""
    # Prefect's client telemetry would try to reach the internet at exit; JobCloud runs on
    # closed networks. An explicit DO_NOT_TRACK=0 from the user still wins.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    try:
        rv = app(args=argv, standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except (typer.Exit, click.exceptions.Exit) as exc:
        return exc.exit_code
    except (typer.Abort, click.exceptions.Abort):
        err.print("aborted")
        return 130
    except (typer.TyperException, click.exceptions.ClickException) as exc:
        # Usage errors (missing argument, unknown option, no sub-command): exit 2.
        exc.show(file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except UserError as exc:
        _say("error", exc)
        return 2
    except JobCloudError as exc:
        _say("failed", exc)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
