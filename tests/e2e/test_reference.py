"""The PyTorch reference application (torchfit) for real: its image built here (torch from the
local wheel), train then predict with the trained artifact on the CPU through
`jobcloud run --local` against a real Prefect server, the loss curve shown as a UI artifact."""

from __future__ import annotations

import base64
import json
import re
import struct
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent.parent
SAMPLE = ROOT / "images" / "torchfit" / "sample"


@pytest.fixture(scope="session")
def torchfit_image(engine: str) -> str:
    """localhost/jobcloud/torchfit:1 and its bases (skipped when up to date)."""
    from jobcloud.deployments.imaging.build import build

    build(["torchfit"], log=lambda m: None)
    return "localhost/jobcloud/torchfit:1"


def _json(proc) -> dict:
    assert proc.stdout.strip(), f"no JSON on stdout; stderr:\n{proc.stderr}"
    return json.loads(proc.stdout)


def _artifacts_of(flow_run_id: str) -> list:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from tests.prefect_helpers import prefect_client

    with prefect_client() as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))


def test_train_then_predict_with_the_trained_artifact(torchfit_image, prefect_api, cli, jc_env) -> None:
    from jobcloud.blocks.store.factory import store_from_settings

    put = cli("files", "put", str(SAMPLE / "data"), str(SAMPLE / "config.yaml"), "samples/torchfit")
    assert put.returncode == 0, put.stderr

    train = cli(
        "run",
        "torchfit/v1/train",
        "--config",
        "samples/torchfit/config.yaml",
        "--data",
        "samples/torchfit/data",
        "--env",
        "TORCHFIT_EPOCHS=25",
        "--local",
        "--json",
        timeout=600,
    )
    assert train.returncode == 0, train.stdout + train.stderr
    job = _json(train)
    assert job["state"] == "Completed"
    keys = {o["key"] for o in job["manifest"]["outputs"]}
    prefix = f"jobs/{job['id']}"
    for key in (
        "artifact/model.pt",
        "artifact/model.json",
        "output/metrics.json",
        "output/losses.csv",
        "output/loss_curve.png",
        "log/train.log",
        "log/container.log",
    ):
        assert f"{prefix}/{key}" in keys, keys

    store = store_from_settings()
    metrics = json.loads(store.read_bytes(f"{prefix}/output/metrics.json"))
    assert metrics["epochs"] == 25 and metrics["device"] == "cpu" and metrics["rows"] == 800
    # The model learns: the standardised validation loss falls well below 1 (predicting the mean).
    assert metrics["validation_loss"] < 0.3, metrics
    png = store.read_bytes(f"{prefix}/output/loss_curve.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (800, 500)
    assert "epoch 25/25" in store.read_bytes(f"{prefix}/log/train.log").decode()
    assert "device cpu" in store.read_bytes(f"{prefix}/log/container.log").decode()

    # The loss curve is an artifact of the flow run, the picture embedded in its markdown.
    markdown = [a.data for a in _artifacts_of(job["id"]) if a.type == "markdown"]
    embedded = [re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", m) for m in markdown]
    assert any(e and base64.b64decode(e.group(1)) == png for e in embedded), markdown

    predict = cli(
        "run",
        "torchfit/v1/predict",
        "--artifact",
        f"{prefix}/artifact",
        "--data",
        "samples/torchfit/data",
        "--local",
        "--json",
        timeout=600,
    )
    assert predict.returncode == 0, predict.stdout + predict.stderr
    pjob = _json(predict)
    assert pjob["state"] == "Completed"
    assert [i["key"] for i in pjob["manifest"]["inputs"] if i["kind"] == "artifact_ids"] == [f"{prefix}/artifact"]
    rows = store.read_bytes(f"jobs/{pjob['id']}/output/predictions.csv").decode().splitlines()
    assert rows[0] == "x1,x2,y_predicted" and len(rows) == 801
    pmetrics = json.loads(store.read_bytes(f"jobs/{pjob['id']}/output/metrics.json"))
    assert pmetrics["rows"] == 800 and pmetrics["mse"] < 0.3 and pmetrics["model_trained_on"] == "cpu"


def test_predict_without_a_model_fails_and_says_what_to_pass(torchfit_image, prefect_api, cli) -> None:
    assert cli("files", "put", str(SAMPLE / "data"), "samples/torchfit").returncode == 0
    proc = cli("run", "torchfit/v1/predict", "--data", "samples/torchfit/data", "--local", "--json", timeout=300)
    # The model is a required input (catalog `required_inputs`): bad input, nothing started.
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "missing required input: artifact_ids" in proc.stderr and "--artifact" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_images_build_skips_an_up_to_date_image(torchfit_image, cli) -> None:
    proc = cli("images", "build", "torchfit")
    assert proc.returncode == 0, proc.stderr
    assert "all up to date" in proc.stdout
    assert "torchfit: localhost/jobcloud/torchfit:1 present and up to date" in proc.stderr


def test_images_build_names_unknown_images(cli) -> None:
    proc = cli("images", "build", "no-such-image")
    assert proc.returncode == 2
    assert "no image no-such-image" in proc.stderr and "torchfit" in proc.stderr
