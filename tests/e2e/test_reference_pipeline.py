"""Pipelines for real: train -> predict as one Prefect flow whose steps are their own jobs
(child flow runs with their own ids, manifests and outputs), against a real Prefect server
and real containers. Uses linefit (busybox, seconds) so the chaining is what is tested."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLE = ROOT / "examples" / "linefit"


def _pipeline(cli, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobcloud.deployments.cli", "pipelines", *args],
        cwd=ROOT,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _children(parent_id: str) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    from tests.prefect_helpers import prefect_client

    with prefect_client() as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id])))
        return sorted(runs, key=lambda r: r.start_time or r.created)


def test_train_predict_pipeline_runs_each_step_as_its_own_job(images, prefect_api, cli) -> None:
    from jobcloud.blocks.store.factory import store_from_settings

    assert cli("files", "put", str(EXAMPLE / "points.csv"), str(EXAMPLE / "config.yaml"), "ex").returncode == 0
    proc = _pipeline(cli, "run", "linefit-train-predict", "--config", "ex/config.yaml", "--data", "ex/points.csv")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["state"] == "Completed"
    jobs = out["result"]["jobs"]
    assert set(jobs) == {"train", "predict"} and jobs["train"] != jobs["predict"]

    children = _children(out["id"])
    assert [str(r.id) for r in children] == [jobs["train"], jobs["predict"]]
    assert all(r.state.is_completed() for r in children)
    assert "entrypoint:train" in children[0].tags and "entrypoint:predict" in children[1].tags

    store = store_from_settings()
    predict = json.loads(store.read_bytes(f"jobs/{jobs['predict']}/manifest.json"))
    assert [i["key"] for i in predict["inputs"] if i["kind"] == "artifact_ids"] == [f"jobs/{jobs['train']}/artifact"]
    assert store.read_bytes(f"jobs/{jobs['predict']}/output/predictions.csv").strip()


def test_a_failed_step_stops_the_pipeline_and_names_the_job(images, prefect_api, cli, tmp_path: Path) -> None:
    one_row = tmp_path / "one-row.csv"
    one_row.write_text("1,2\n")  # a line needs two points: linefit's train exits non-zero
    assert cli("files", "put", str(one_row), str(EXAMPLE / "config.yaml"), "bad").returncode == 0
    # So predict must not start.
    proc = _pipeline(cli, "run", "linefit-train-predict", "--config", "bad/config.yaml", "--data", "bad/one-row.csv")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["state"] == "Failed"
    assert "step 'train' (linefit/v1/train) ended Failed" in out["message"]
    children = _children(out["id"])
    assert len(children) == 1 and str(children[0].id) in out["message"]


def test_unknown_pipeline_is_a_usage_error(cli) -> None:
    proc = _pipeline(cli, "run", "nope")
    assert proc.returncode == 2 and "no pipeline 'nope'" in proc.stderr


def test_served_pipeline_is_a_deployment_started_like_from_the_ui(images, prefect_api, cli) -> None:
    """`jobcloud pipelines serve` makes the deployment; a run of it (what the UI's Run
    button does) executes train and predict as child jobs."""
    import time

    from prefect.exceptions import ObjectNotFound

    from tests.prefect_helpers import prefect_client

    assert cli("files", "put", str(EXAMPLE / "points.csv"), str(EXAMPLE / "config.yaml"), "ex").returncode == 0
    server = subprocess.Popen(
        [sys.executable, "-m", "jobcloud.deployments.cli", "pipelines", "serve", "linefit-train-predict"],
        cwd=ROOT,
        env=cli.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with prefect_client() as client:
            deadline = time.monotonic() + 90
            while True:
                try:
                    deployment = client.read_deployment_by_name("pipeline-linefit-train-predict/pipeline")
                    break
                except ObjectNotFound:
                    assert server.poll() is None, server.stderr.read()
                    assert time.monotonic() < deadline, "the pipeline deployment did not appear"
                    time.sleep(1)
            assert deployment.entrypoint == "jobcloud.flows.pipeline.linefit-train-predict"
            run = client.create_flow_run_from_deployment(
                deployment.id, parameters={"config_id": "ex/config.yaml", "data_ids": ["ex/points.csv"]}
            )
            deadline = time.monotonic() + 180
            while not (run := client.read_flow_run(run.id)).state.is_final():
                assert time.monotonic() < deadline, f"pipeline run still {run.state.name}"
                time.sleep(1)
        assert run.state.is_completed(), run.state.message
        children = _children(str(run.id))
        assert [r.name for r in children] == ["train", "predict"]
        assert all(r.state.is_completed() for r in children)
    finally:
        server.terminate()
        server.wait(timeout=30)
