"""`jobcloud deploy`: pools and deployments on the Prefect server, from the catalog."""

from __future__ import annotations

from pathlib import Path

import typer

from jobcloud.blocks.errors import ParameterError
from jobcloud.deployments.cli.output import err, out, print_json
from jobcloud.deployments.pools.work_pools import POOLS

# Imports inside the command: Prefect only after `connect_api` (see local_server.ensure_api).

DEFAULT_PREFECT_YAML = Path("prefect.yaml")


def parse_limits(pairs: list[str]) -> dict[str, int | None]:
    """POOL=N pairs (N=0 removes the limit) into a dict."""
    limits: dict[str, int | None] = {}
    for pair in pairs:
        pool, sep, value = pair.partition("=")
        if not sep or not value.isdigit():
            raise ParameterError(f"--limit {pair!r} is not POOL=N (e.g. cpu=4; 0 removes the limit)")
        if pool not in POOLS:
            raise ParameterError(f"--limit {pair!r}: unknown pool {pool!r}; pools are {', '.join(POOLS)}")
        limits[pool] = int(value)
    return limits


def deploy_command(
    prune: bool = typer.Option(False, "--prune", help="Delete JobCloud deployments whose entrypoints left the catalog."),
    limit: list[str] = typer.Option([], "--limit", metavar="POOL=N", help="Concurrency limit of a pool, e.g. cpu=4 (0: none)."),
    watch: bool = typer.Option(False, "--watch", help="Keep running; sync again whenever the catalog file changes."),
    interval: float = typer.Option(2.0, "--interval", min=0.1, help="Seconds between checks of the catalog (--watch)."),
    pool_type: list[str] = typer.Option(
        [],
        "--pool-type",
        metavar="POOL=TYPE",
        help="Worker type of a pool, e.g. cpu=docker (repeatable; jobcloud, docker, kubernetes, ecs, cloud-run-v2, "
        "vertex-ai; default JOBCLOUD_POOL_TYPES, else jobcloud).",
    ),
    catalog_path: Path | None = typer.Option(
        None, "--catalog", help="Catalog file (default: JOBCLOUD_CONFIG or ./application_config.yaml)."
    ),
    prefect_yaml: Path = typer.Option(
        DEFAULT_PREFECT_YAML, "--prefect-yaml", help="prefect.yaml whose scheduled deployments are applied too."
    ),
    write_prefect_yaml: bool = typer.Option(
        False, "--write-prefect-yaml", help="Regenerate prefect.yaml from the catalog (keeps its schedules) and exit."
    ),
    json_: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Make work pools and deployments match the catalog (idempotent)."""
    from jobcloud.deployments.jobs.submit import connect_api
    from jobcloud.flows.catalog import default_catalog_path, load_catalog

    path = catalog_path or default_catalog_path()
    limits = parse_limits(list(limit))
    pool_types = _pool_types(list(pool_type))
    if write_prefect_yaml:
        from jobcloud.deployments.deploy.sync import render_prefect_yaml

        prefect_yaml.write_text(render_prefect_yaml(load_catalog(path), prefect_yaml))
        out.print(f"wrote {prefect_yaml}")
        return
    api = connect_api()
    from jobcloud.deployments.deploy.sync import sync

    def once(catalog) -> None:
        changes = sync(catalog, prune=prune, limits=limits, prefect_yaml=prefect_yaml, pool_types=pool_types)
        _report(api, changes, json_)

    if not watch:
        once(load_catalog(path))
        return
    from jobcloud.deployments.deploy.watch import watch as watch_loop

    def on_error(exc) -> None:
        err.print(f"[red]catalog not applied:[/] {exc}", highlight=False)

    err.print(f"watching {path} every {interval} s (Ctrl-C stops)")
    try:
        watch_loop(path, once, on_error, interval=interval)
    except KeyboardInterrupt:
        err.print("stopped watching")


def _pool_types(pairs: list[str]) -> dict[str, str]:
    """--pool-type over JOBCLOUD_POOL_TYPES, the pools they name; each type's package checked
    before anything connects (a pool named by neither keeps its type, or is made `jobcloud`)."""
    from jobcloud.blocks.settings import get_settings
    from jobcloud.deployments.pools.types import parse_pool_types, require_pool_type

    types = parse_pool_types(pairs, get_settings().pool_types, fill=False)
    for kind in sorted(set(types.values())):
        require_pool_type(kind)
    return types


def _report(api: str, changes: list, as_json: bool) -> None:
    if as_json:
        print_json({"api": api, "changes": [c.model_dump() for c in changes]})
        return
    colours = {"created": "green", "updated": "yellow", "deleted": "red", "warning": "red", "unchanged": "dim"}
    for c in changes:
        colour = colours.get(c.action, "white")
        out.print(f"[{colour}]{c.action:>9}[/]  {c.name}  {c.detail}", highlight=False)
    counts = {a: sum(c.action == a for c in changes) for a in ("created", "updated", "deleted", "unchanged")}
    out.print(f"{api}: " + ", ".join(f"{n} {a}" for a, n in counts.items()), highlight=False)
