"""Pipelines: declarations, checks against the catalog, and the parameters of each step."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobcloud.flows.catalog import load_catalog
from jobcloud.flows.pipeline import (
    PIPELINES,
    Pipeline,
    PipelineError,
    Step,
    StepParams,
    check_pipeline,
    load_pipelines,
    make_pipeline_flow,
    step_parameters,
)

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def catalog():
    return load_catalog(ROOT / "application_config.yaml")


def test_shipped_pipelines_fit_the_repo_catalog(catalog) -> None:
    for pipeline in PIPELINES.values():
        check_pipeline(pipeline, catalog)
    assert [s.name for s in PIPELINES["torchfit-train-predict"].steps] == ["train", "predict"]


def test_a_step_may_only_take_artifacts_of_earlier_steps() -> None:
    with pytest.raises(ValueError, match="not earlier steps"):
        Pipeline(steps=[Step(name="predict", entrypoint="a/v/p", artifacts_from=["train"]), Step(name="train", entrypoint="a/v/t")])
    with pytest.raises(ValueError, match="used twice"):
        Pipeline(steps=[Step(name="x", entrypoint="a/v/t"), Step(name="x", entrypoint="a/v/p")])


def test_check_refuses_unknown_entrypoints_and_steps_without_artifact_folders(catalog) -> None:
    with pytest.raises(Exception, match="no application 'nope'"):
        check_pipeline(Pipeline(steps=[Step(name="a", entrypoint="nope/v1/train")]), catalog)
    # linefit's train takes no artifact folder? It does; torchfit's train does not.
    bad = Pipeline(
        steps=[Step(name="a", entrypoint="torchfit/v1/train"), Step(name="b", entrypoint="torchfit/v1/train", artifacts_from=["a"])]
    )
    with pytest.raises(PipelineError, match="takes no artifacts"):
        check_pipeline(bad, catalog)
    bad = Pipeline(
        steps=[Step(name="a", entrypoint="linefit/v1/predict"), Step(name="b", entrypoint="linefit/v1/predict", artifacts_from=["a"])]
    )
    with pytest.raises(PipelineError, match="uploads no artifact"):
        check_pipeline(bad, catalog)


def test_step_parameters_share_what_each_entrypoint_takes_and_chain_artifacts(catalog) -> None:
    train, predict = PIPELINES["torchfit-train-predict"].steps
    shared = {"config_id": "cfg/c.yaml", "data_ids": ["data/d"], "env": {"TORCHFIT_EPOCHS": "3", "OTHER": "x"}}
    assert step_parameters(train, catalog, shared, None, {}) == {
        "config_id": "cfg/c.yaml",
        "data_ids": ["data/d"],
        "env": {"TORCHFIT_EPOCHS": "3"},  # only allow-listed names reach a step
    }
    # predict takes no config and allows no env; it gets train's artifact.
    assert step_parameters(predict, catalog, shared, None, {"train": "abc"}) == {
        "data_ids": ["data/d"],
        "artifact_ids": ["jobs/abc/artifact"],
    }


def test_step_overrides_win_and_artifacts_are_added(catalog) -> None:
    _, predict = PIPELINES["torchfit-train-predict"].steps
    override = StepParams(data_ids=["data/other"], artifact_ids=["jobs/old/artifact"], hardware={"gpu": 0}, timeout=60)
    params = step_parameters(predict, catalog, {"data_ids": ["data/d"]}, override, {"train": "abc"})
    assert params["data_ids"] == ["data/other"]
    assert params["artifact_ids"] == ["jobs/old/artifact", "jobs/abc/artifact"]
    assert params["hardware"] == {"gpu": 0} and params["timeout"] == 60


def test_pipelines_file_adds_pipelines_and_names_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "pipelines.yaml"
    f.write_text(
        "mine:\n  description: two steps\n  steps:\n"
        "    - {name: fit, entrypoint: linefit/v1/train}\n"
        "    - {name: use, entrypoint: linefit/v1/predict, artifacts_from: [fit]}\n"
    )
    monkeypatch.setenv("JOBCLOUD_PIPELINES", str(f))
    pipelines = load_pipelines()
    assert "mine" in pipelines and "torchfit-train-predict" in pipelines
    assert pipelines["mine"].steps[1].artifacts_from == ["fit"]
    f.write_text("mine:\n  steps:\n    - {name: fit, entrypoint: linefit/v1/train, bogus: 1}\n")
    with pytest.raises(PipelineError, match="pipeline 'mine'.*bogus"):
        load_pipelines()
    f.write_text("- just a list\n")
    with pytest.raises(PipelineError, match="top level must be a mapping"):
        load_pipelines()


def test_pipeline_flow_is_named_and_documents_its_steps() -> None:
    flow = make_pipeline_flow("torchfit-train-predict", PIPELINES["torchfit-train-predict"])
    assert flow.name == "pipeline-torchfit-train-predict"
    assert "train (torchfit/v1/train) -> predict (torchfit/v1/predict)" in flow.fn.__doc__
    from prefect.utilities.callables import parameter_schema

    props = parameter_schema(flow).model_dump()["properties"]
    assert {"config_id", "data_ids", "env", "steps", "use_deployments"} <= set(props)


def test_module_attribute_is_the_pipeline_flow_for_deployments() -> None:
    import jobcloud.flows.pipeline as module

    assert getattr(module, "linefit-train-predict").name == "pipeline-linefit-train-predict"
    with pytest.raises(AttributeError, match="no such pipeline"):
        _ = module.nope
