"""Pipelines: catalog entrypoints chained into one Prefect flow (train -> predict).

A pipeline is a list of steps; each step is one catalog entrypoint and runs as its own job
(its own flow run, job id, manifest and `jobs/<id>/` outputs), a child of the pipeline's run.
A step may take the artifacts of earlier steps (`artifacts_from`): the key
`jobs/<id of that step>/artifact` is added to its `artifact_ids`.

Where pipelines are declared: in Python, in `PIPELINES` below (the examples), plus any YAML
file that `JOBCLOUD_PIPELINES` names, with the same shape:

```yaml
torchfit-train-predict:
  description: Train, then predict with the trained model.
  steps:
    - {name: train, entrypoint: torchfit/v1/train}
    - {name: predict, entrypoint: torchfit/v1/predict, artifacts_from: [train]}
```
(A `pipelines:` key in application_config.yaml would clash with application names there.)

The pipeline flow's parameters: `config_id`, `data_ids`, `env` (given to each step whose
entrypoint accepts them: a config folder, a data folder, allow-listed names), `steps` (per-step
overrides by step name: any job parameter, e.g. `{"train": {"hardware": {"gpu": 1}}}`), and
`use_deployments`: run each step through its entrypoint's deployment (`run_deployment`, so a
GPU step goes to the gpu pool's workers) instead of in-process as a subflow.

Starting one: from the Prefect UI once deployed (`jobcloud pipelines serve` serves every
pipeline as a deployment; a deployment's entrypoint is the module path
`jobcloud.flows.pipeline.<pipeline-name>`), or `jobcloud pipelines run NAME --config KEY --data KEY`
(deployments/cli/pipelines.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jobcloud.blocks.errors import UserError
from jobcloud.blocks.settings import get_settings
from jobcloud.flows.catalog import Catalog, EntrypointRef, load_catalog
from jobcloud.flows.manifest import job_prefix
from jobcloud.flows.request import HardwareOverride

# Prefect and jobcloud.flows.job are imported inside the functions: the CLI lists pipelines without them.

PIPELINE_TAG = "jobcloud-pipeline"


class PipelineError(UserError):
    """A pipeline declaration or a pipeline's parameters are wrong."""


class Step(BaseModel):
    """One job of a pipeline."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")
    entrypoint: str = Field(description="APP/VERSION/ENTRYPOINT of the catalog.")
    artifacts_from: list[str] = Field(default_factory=list, description="Earlier steps whose artifact this step takes.")

    @property
    def ref(self) -> EntrypointRef:
        return EntrypointRef.parse(self.entrypoint)


class Pipeline(BaseModel):
    """Steps run in order; a failed step stops the pipeline."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str | None = None
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _order(self) -> Pipeline:
        seen: set[str] = set()
        for step in self.steps:
            if step.name in seen:
                raise ValueError(f"step name {step.name!r} is used twice")
            late = [s for s in step.artifacts_from if s not in seen]
            if late:
                raise ValueError(f"step {step.name!r} takes artifacts from {late}, which are not earlier steps")
            seen.add(step.name)
        return self


class StepParams(BaseModel):
    """Per-step overrides of the job parameters."""

    model_config = ConfigDict(extra="forbid")
    config_id: str | None = None
    data_ids: list[str] | None = None
    artifact_ids: list[str] | None = None
    env: dict[str, str] | None = None
    hardware: HardwareOverride | None = None
    timeout: int | None = None


PIPELINES: dict[str, Pipeline] = {
    "torchfit-train-predict": Pipeline(
        description="Train torchfit on the data with the config, then predict with the trained model.",
        steps=[
            Step(name="train", entrypoint="torchfit/v1/train"),
            Step(name="predict", entrypoint="torchfit/v1/predict", artifacts_from=["train"]),
        ],
    ),
    "linefit-train-predict": Pipeline(
        description="Fit a line to the data with the config, then predict with the fitted model.",
        steps=[
            Step(name="train", entrypoint="linefit/v1/train"),
            Step(name="predict", entrypoint="linefit/v1/predict", artifacts_from=["train"]),
        ],
    ),
}


class PipelineEnded(Exception):
    """The data of a pipeline run that did not complete: its message, with the steps' table
    (`{"pipeline", "jobs", "steps"}`) as ``result``."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.result))


def load_pipelines(path: str | os.PathLike[str] | None = None) -> dict[str, Pipeline]:
    """The Python pipelines plus those of the YAML file (`path` or `JOBCLOUD_PIPELINES`)."""
    pipelines = dict(PIPELINES)
    path = path or get_settings().pipelines
    if not path:
        return pipelines
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PipelineError(f"{p}: cannot read the pipelines file: {exc}") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{p}: the top level must be a mapping: pipeline name -> {{description, steps}}")
    for name, body in data.items():
        try:
            pipelines[str(name)] = Pipeline.model_validate(body)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise PipelineError(f"{p}: pipeline {name!r}: {problems}") from None
    return pipelines


def check_pipeline(pipeline: Pipeline, catalog: Catalog) -> None:
    """Every step names a catalog entrypoint; a step taking artifacts has an artifact folder."""
    for step in pipeline.steps:
        entry = catalog.get(step.ref)
        if step.artifacts_from and not entry.handler.files_down.artifact_ids:
            raise PipelineError(f"step {step.name!r}: {step.entrypoint} takes no artifacts (no files_down.artifact_ids)")
        for source in step.artifacts_from:
            src = catalog.get(next(s for s in pipeline.steps if s.name == source).ref)
            if not src.handler.files_up.artifact:
                raise PipelineError(f"step {step.name!r}: step {source!r} ({src}) uploads no artifact")


def step_parameters(
    step: Step,
    catalog: Catalog,
    shared: dict[str, Any],
    override: StepParams | None,
    job_ids: dict[str, str],
) -> dict[str, Any]:
    """The job parameters of one step: the shared ones it accepts, earlier artifacts, overrides."""
    entry = catalog.get(step.ref)
    down = entry.handler.files_down
    params: dict[str, Any] = {}
    if down.config_id and shared.get("config_id"):
        params["config_id"] = shared["config_id"]
    if down.data_ids and shared.get("data_ids"):
        params["data_ids"] = list(shared["data_ids"])
    env = {k: v for k, v in (shared.get("env") or {}).items() if k in entry.app.env}
    if env:
        params["env"] = env
    artifacts = [f"{job_prefix(job_ids[s])}/artifact" for s in step.artifacts_from]
    if override:
        params.update(override.model_dump(exclude_none=True))
    if artifacts:
        params["artifact_ids"] = [*params.get("artifact_ids", []), *artifacts]
    return params


def _run_step_subflow(step: Step, catalog: Catalog, params: dict[str, Any]) -> tuple[str, Any]:
    from prefect import tags

    from jobcloud.flows.job import make_flow

    ref = step.ref
    flow = make_flow(ref, catalog.get(ref)).with_options(flow_run_name=f"{step.name}")
    with tags(*ref.tags):
        state = flow(**params, return_state=True)
    return str(state.state_details.flow_run_id), state


def _run_step_deployment(step: Step, params: dict[str, Any]) -> tuple[str, Any]:
    from prefect.deployments import run_deployment

    ref = step.ref
    run = run_deployment(ref.deployment_full_name, parameters=params, tags=ref.tags, as_subflow=True, timeout=None)
    return str(run.id), run.state


def run_pipeline(
    name: str,
    pipeline: Pipeline,
    config_id: str | None = None,
    data_ids: list[str] | None = None,
    env: dict[str, str] | None = None,
    steps: dict[str, StepParams] | None = None,
    use_deployments: bool = False,
) -> Any:
    """The body of a pipeline flow: each step as its own job, in order."""
    from prefect import get_run_logger
    from prefect.artifacts import create_table_artifact
    from prefect.states import Failed

    logger = get_run_logger()
    catalog = load_catalog()
    check_pipeline(pipeline, catalog)
    overrides = steps or {}
    unknown = sorted(set(overrides) - {s.name for s in pipeline.steps})
    if unknown:
        raise PipelineError(f"steps {unknown} are not in pipeline {name!r}; its steps: {[s.name for s in pipeline.steps]}")
    shared = {"config_id": config_id, "data_ids": data_ids or [], "env": env or {}}
    job_ids: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    failure: str | None = None
    for step in pipeline.steps:
        params = step_parameters(step, catalog, shared, overrides.get(step.name), job_ids)
        logger.info("step %s: %s with %s", step.name, step.entrypoint, params)
        job_id, state = _run_step_deployment(step, params) if use_deployments else _run_step_subflow(step, catalog, params)
        job_ids[step.name] = job_id
        state_name = state.name if state is not None else "Unknown"
        rows.append(
            {"step": step.name, "entrypoint": step.entrypoint, "job": job_id, "state": state_name, "outputs": f"{job_prefix(job_id)}/"}
        )
        logger.info("step %s: job %s %s", step.name, job_id, state_name)
        if state is None or not state.is_completed():
            failure = f"step {step.name!r} ({step.entrypoint}) ended {state_name}: job {job_id}" + (
                f": {state.message}" if state is not None and state.message else ""
            )
            break
    create_table_artifact(table=rows, description=f"Jobs of pipeline {name}")
    result = {"pipeline": name, "jobs": job_ids, "steps": rows}
    if failure:
        logger.error(failure)
        # An exception as the data: a worker's engine raises a failed run's data, and logs a
        # TypeError for anything else (see manifest.JobEnded).
        return Failed(message=failure, data=PipelineEnded(failure, result))
    return result


def make_pipeline_flow(name: str, pipeline: Pipeline) -> Any:
    """The Prefect flow of one pipeline, named `pipeline-<name>`."""
    from prefect import Flow

    def pipeline_flow(
        config_id: str | None = None,
        data_ids: list[str] | None = None,
        env: dict[str, str] | None = None,
        steps: dict[str, StepParams] | None = None,
        use_deployments: bool = False,
    ) -> Any:
        return run_pipeline(name, pipeline, config_id, data_ids, env, steps, use_deployments)

    chain = " -> ".join(f"{s.name} ({s.entrypoint})" for s in pipeline.steps)
    # Named as this module's attribute: a deployment's module-path entrypoint is then
    # `jobcloud.flows.pipeline.<name>`, which `__getattr__` below resolves in a worker or runner.
    pipeline_flow.__name__ = pipeline_flow.__qualname__ = name
    pipeline_flow.__doc__ = f"""Pipeline {name}: {chain}.

    Args:
        config_id: Key of the configuration, given to each step that takes a config.
        data_ids: Keys of data inputs, given to each step that takes data.
        env: Environment variables, each given to the steps that allow it.
        steps: Per-step overrides by step name, e.g. {{"train": {{"hardware": {{"gpu": 1}}}}}}.
        use_deployments: Run each step through its deployment (its own work pool) instead of in this process.
    """
    return Flow(
        fn=pipeline_flow,
        name=f"pipeline-{name}",
        description=pipeline.description or chain,
        validate_parameters=True,
        persist_result=False,
    )


def pipeline_flows(pipelines: dict[str, Pipeline] | None = None) -> dict[str, Any]:
    """Every pipeline's flow, by pipeline name."""
    pipelines = pipelines if pipelines is not None else load_pipelines()
    return {name: make_pipeline_flow(name, p) for name, p in pipelines.items()}


def __getattr__(name: str) -> Any:
    # `jobcloud.flows.pipeline.<name>` as a deployment entrypoint, like jobcloud.flows.catalog_flows.
    if name.startswith("__"):
        raise AttributeError(name)
    pipelines = load_pipelines()
    if name not in pipelines:
        raise AttributeError(f"{name}: no such pipeline; known: {', '.join(pipelines)}")
    return make_pipeline_flow(name, pipelines[name])
