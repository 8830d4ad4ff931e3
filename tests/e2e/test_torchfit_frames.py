"""The GPU reference workload (torchfit's `frames` kind) through the catalog's own entrypoints:
`kind: frames` in the config is all it takes. Runs on the CPU here, in the torchfit image, so
it also covers the frames code where the test environment has no torch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent.parent
SAMPLE = ROOT / "images" / "torchfit" / "sample"


@pytest.fixture(scope="session")
def torchfit_image(engine: str) -> str:
    from jobcloud.deployments.imaging.build import build

    build(["torchfit"], log=lambda m: None)
    return "localhost/jobcloud/torchfit:1"


def test_frames_train_then_predict_through_the_catalog(torchfit_image, prefect_api, cli, jc_env) -> None:
    from jobcloud.blocks.store.factory import store_from_settings

    put = cli("files", "put", str(SAMPLE / "data"), str(SAMPLE / "frames.yaml"), "samples/torchfit")
    assert put.returncode == 0, put.stderr
    # The catalog's train needs a data id; the frames kind does not read it.
    train = cli(
        "run",
        "torchfit/v1/train",
        "--config",
        "samples/torchfit/frames.yaml",
        "--data",
        "samples/torchfit/data",
        "--env",
        "TORCHFIT_EPOCHS=3",
        "--local",
        "--json",
        timeout=600,
    )
    assert train.returncode == 0, train.stdout + train.stderr
    job = json.loads(train.stdout)
    assert job["state"] == "Completed"
    prefix = f"jobs/{job['id']}"
    store = store_from_settings()
    metrics = json.loads(store.read_bytes(f"{prefix}/output/metrics.json"))
    assert metrics["kind"] == "frames" and metrics["epochs"] == 3 and metrics["device"] == "cpu"
    assert metrics["train_loss"] < 0.5 and metrics["compiled"] is False
    assert json.loads(store.read_bytes(f"{prefix}/artifact/model.json"))["kind"] == "frames"
    assert store.read_bytes(f"{prefix}/output/loss_curve.png")[:4] == b"\x89PNG"

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
    pjob = json.loads(predict.stdout)
    pmetrics = json.loads(store.read_bytes(f"jobs/{pjob['id']}/output/metrics.json"))
    assert pmetrics["kind"] == "frames" and pmetrics["frames"] == 64 and pmetrics["localisations"] > 0
    rows = store.read_bytes(f"jobs/{pjob['id']}/output/localisations.csv").decode().splitlines()
    assert rows[0] == "frame,x,y,probability" and len(rows) == pmetrics["localisations"] + 1
