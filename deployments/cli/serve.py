"""`jobcloud api`: serve the HTTP API, register its services with a Swiss AI Center core engine."""

from __future__ import annotations

import typer

from jobcloud.deployments.cli.output import out, print_json

APP_FACTORY = "jobcloud.deployments.http_api.app:create_app"

api_app = typer.Typer(help="JobCloud's HTTP API for front-ends and services (docs/api.md).", no_args_is_help=True)


@api_app.command("serve")
def serve_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8080, "--port", help="Port to listen on."),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        help="API processes sharing the port (uvicorn workers); rate limits and job bounds hold across them.",
    ),
) -> None:
    """Serve the API (OpenAPI docs at /docs) against the configured Prefect server and job store."""
    import uvicorn

    from jobcloud.deployments.http_api.app import create_app

    app = create_app()  # a missing or bad key list stops here, before listening
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level="info")
        return
    # Each worker process builds its own app (its own Prefect client and job cache); they
    # share the limits through JOBCLOUD_API_STATE_DIR.
    uvicorn.run(APP_FACTORY, factory=True, host=host, port=port, workers=workers, log_level="info")


@api_app.command("register")
def register_command(
    core_url: str = typer.Option(..., "--core-url", help="The Swiss AI Center core engine, e.g. https://core.example.org."),
    public_url: str = typer.Option(..., "--public-url", help="Where the core engine reaches this API."),
    token: str | None = typer.Option(None, "--token", help="Bearer token for the core engine (default: JOBCLOUD_API_CORE_TOKEN)."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Register every entrypoint as a service with the core engine (POST CORE_URL/services)."""
    from jobcloud.blocks.settings import get_settings
    from jobcloud.deployments.http_api.register import register
    from jobcloud.flows.catalog import load_catalog

    if token is None and (secret := get_settings().api.core_token) is not None:
        token = secret.get_secret_value()
    results = register(core_url, public_url, load_catalog(), token=token)
    if json_:
        print_json({"core_url": core_url, "services": results})
    else:
        for r in results:
            out.print(f"{r['slug']}: HTTP {r['status']}", highlight=False)
    if any(r["status"] >= 300 for r in results):
        raise typer.Exit(1)
