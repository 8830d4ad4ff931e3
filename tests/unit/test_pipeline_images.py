"""Pictures among a job's outputs shown in the Prefect UI, and torchfit's stdlib PNG writer."""

from __future__ import annotations

import base64
import re
import struct
import sys
import zlib
from datetime import datetime, timezone
from pathlib import Path

from flows.manifest import JobManifest, OutputRecord
from flows.output_images import artifact_key, image_markdown

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "images" / "torchfit"))
from torchfit.png import Canvas, loss_curve_png  # noqa: E402


def _decode_png(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and raw RGB rows of a PNG, checking every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, kinds = 8, b"", []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        kinds.append(kind)
        if kind == b"IHDR":
            w, h, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (8, 2)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    return w, h, zlib.decompress(idat)


def test_loss_curve_is_a_valid_png_with_the_curves_drawn() -> None:
    png = loss_curve_png({"train": [1.0 / (e + 1) for e in range(50)], "validation": [1.2 / (e + 1) for e in range(50)]})
    w, h, raw = _decode_png(png)
    assert (w, h) == (640, 400)
    assert len(raw) == h * (1 + 3 * w)
    assert bytes((31, 119, 180)) in raw and bytes((255, 127, 14)) in raw  # both series' colours


def test_loss_curve_survives_empty_flat_and_non_finite_series() -> None:
    for series in ({}, {"train": []}, {"train": [0.5, 0.5]}, {"train": [float("nan"), 0.0, float("inf"), 1.0]}):
        _decode_png(loss_curve_png(series))


def test_canvas_draws_text_and_lines_inside_its_bounds() -> None:
    cv = Canvas(20, 10)
    cv.line(-5, -5, 30, 30, (0, 0, 0), thick=3)
    cv.text(0, 0, "1.5e-3 ?", scale=1)
    assert _decode_png(cv.png())[:2] == (20, 10)


def _manifest(outputs: list[OutputRecord]) -> JobManifest:
    now = datetime.now(timezone.utc)
    return JobManifest(job_id="j1", application="torchfit", version="v1", entrypoint="train", image="i", command=[],
                       env_names=[], hardware={}, state="Completed", outputs=outputs, started_at=now, finished_at=now)


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
