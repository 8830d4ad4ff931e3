"""Pictures among a job's outputs shown in the Prefect UI, and torchfit's loss curve (matplotlib)."""

from __future__ import annotations

import base64
import io
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from jobcloud.flows.manifest import JobManifest, OutputRecord
from jobcloud.flows.output_images import artifact_key, image_markdown

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "images" / "torchfit"))
from torchfit.plot import loss_curve_png  # noqa: E402


def test_loss_curve_is_a_png_with_both_curves_drawn() -> None:
    from PIL import Image

    png = loss_curve_png({"train": [1.0 / (e + 1) for e in range(50)], "validation": [1.2 / (e + 1) for e in range(50)]})
    img = Image.open(io.BytesIO(png)).convert("RGB")
    assert img.size == (800, 500)
    colours = {c for _, c in img.getcolors(maxcolors=1 << 20)}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # both series' colours


def test_loss_curve_survives_empty_flat_and_non_finite_series() -> None:
    from PIL import Image

    for series in ({}, {"train": []}, {"train": [0.5, 0.5]}, {"train": [float("nan"), 0.0, float("inf"), 1.0]}):
        assert Image.open(io.BytesIO(loss_curve_png(series))).size == (800, 500)


def _manifest(outputs: list[OutputRecord]) -> JobManifest:
    now = datetime.now(UTC)
    return JobManifest(
        job_id="j1",
        application="torchfit",
        version="v1",
        entrypoint="train",
        image="i",
        command=[],
        env_names=[],
        hardware={},
        state="Completed",
        outputs=outputs,
        started_at=now,
        finished_at=now,
    )


def test_image_markdown_embeds_the_bytes_or_names_the_key() -> None:
    md = image_markdown("loss_curve.png", "jobs/j1/output/loss_curve.png", b"\x89PNGdata", 8)
    uri = re.search(r"\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
    assert uri and base64.b64decode(uri.group(1)) == b"\x89PNGdata"
    big = image_markdown("plot.jpg", "jobs/j1/output/plot.jpg", None, 10**9)
    assert "data:" not in big and "jobcloud files get jobs/j1/output/plot.jpg" in big


def test_artifact_key_is_valid_for_prefect() -> None:
    key = artifact_key(_manifest([]), "Loss_Curve v2.png")
    assert key == "torchfit-train-loss-curve-v2"
    assert re.fullmatch(r"[a-z0-9-]+", key)
