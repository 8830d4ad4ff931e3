"""`jobcloud pipelines ls|run|serve`: the pipelines of `jobcloud.flows.pipeline` from the command line.

`jobcloud.flows.pipeline` (the catalog, the job store) is imported inside the commands, so that
`jobcloud --help` stays quick; Prefect only after `ensure_api` has fixed the API.
"""

from __future__ import annotations

import json

import typer

from jobcloud.deployments.cli.output import out
from jobcloud.deployments.cli.run import parse_env

pipelines_app = typer.Typer(help="List, run or serve pipelines (catalog entrypoints chained into one flow).", no_args_is_help=True)


@pipelines_app.command("ls")
def ls_command() -> None:
    """List the pipelines and their steps."""
    from jobcloud.flows.pipeline import load_pipelines

    for name, p in load_pipelines().items():
        out.print(f"{name}: " + " -> ".join(f"{s.name} ({s.entrypoint})" for s in p.steps), markup=False, highlight=False)


@pipelines_app.command("run")
def run_command(
    name: str = typer.Argument(..., help="The pipeline (see `jobcloud pipelines ls`)."),
    config: str | None = typer.Option(None, "--config", help="Key of the configuration."),
    data: list[str] = typer.Option([], "--data", help="Key of a data input (repeatable)."),
    env: list[str] = typer.Option([], "--env", help="NAME=VALUE (repeatable)."),
    deployments: bool = typer.Option(False, "--deployments", help="Run each step through its deployment."),
) -> int:
    """Run one pipeline here (against PREFECT_API_URL or the local server); print one JSON
    object. Exit 0 if it Completed, 1 otherwise, 2 on bad input."""
    from jobcloud.deployments.server.local_server import ensure_api
    from jobcloud.flows.pipeline import PipelineEnded, PipelineError, load_pipelines, make_pipeline_flow

    pipelines = load_pipelines()
    if name not in pipelines:
        raise PipelineError(f"no pipeline {name!r}; known: {', '.join(pipelines)}")
    values = parse_env(list(env))
    ensure_api()  # the local server (and Prefect, through the flow) once the input is good
    flow = make_pipeline_flow(name, pipelines[name])
    state = flow(config_id=config, data_ids=list(data), env=values, use_deployments=deployments, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, PipelineEnded):
        result = result.result
    print(
        json.dumps(
            {
                "id": str(state.state_details.flow_run_id),
                "state": state.type.value.title(),
                "message": state.message,
                "result": result,
            },
            default=str,
        )
    )
    return 0 if state.is_completed() else 1


@pipelines_app.command("serve")
def serve_command(
    names: list[str] = typer.Argument(None, help="Pipelines to serve (default: all)."),
) -> None:
    """Serve pipelines as deployments (start them from the Prefect UI) until stopped."""
    from jobcloud.deployments.server.local_server import ensure_api
    from jobcloud.flows.pipeline import PIPELINE_TAG, PipelineError, load_pipelines, make_pipeline_flow

    pipelines = load_pipelines()
    names = list(names or []) or list(pipelines)
    unknown = [n for n in names if n not in pipelines]
    if unknown:
        raise PipelineError(f"no pipeline {', '.join(unknown)}; known: {', '.join(pipelines)}")
    ensure_api()
    from prefect import serve
    from prefect.deployments.runner import EntrypointType

    serve(
        *(
            make_pipeline_flow(n, pipelines[n]).to_deployment(
                name="pipeline", tags=[PIPELINE_TAG], entrypoint_type=EntrypointType.MODULE_PATH
            )
            for n in names
        )
    )
