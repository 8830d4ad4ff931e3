"""Reading the CSV tables and the YAML config of a job."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

try:  # PyYAML comes with the runtime images; a bare Python with torch may lack it.
    import yaml
except ImportError:  # pragma: no cover - exercised where PyYAML is missing (a lent GPU machine)
    yaml = None

# The `mlp` kind (the default): a regressor fitted to the columns of .csv data.
DEFAULTS: dict[str, Any] = {
    "target": "y",
    "hidden": [64, 64],
    "epochs": 200,
    "batch_size": 64,
    "learning_rate": 0.01,
    "validation_fraction": 0.2,
    "seed": 0,
}

# The `frames` kind: a convolutional network that localises spots in synthetic microscopy
# frames it generates from `seed` (no data to read); see torchfit/frames.py.
FRAMES_DEFAULTS: dict[str, Any] = {
    "frame_size": 32,  # frames are frame_size x frame_size pixels
    "spots": 4,  # mean emitters per frame (each of 2*spots slots is on with p=0.5)
    "psf_sigma": 1.2,  # Gaussian PSF width, pixels
    "photons": [300, 1500],  # emitter brightness, uniform in this range
    "background": 10.0,  # photons per pixel; frames get Poisson noise
    "channels": [32, 32, 32],  # one 3x3 conv layer (and ReLU) per entry, full resolution
    "train_frames": 2048,
    "validation_frames": 256,
    "epochs": 10,
    "batch_size": 64,
    "learning_rate": 0.002,
    "seed": 0,
    "precision": "auto",  # auto (bf16 on a GPU that supports it, else fp32) | fp32 | bf16
    "compile": "auto",  # auto (on CUDA) | true | false; a failed compile falls back to eager
    "generate_on": "device",  # device | cpu (then pinned host memory, non-blocking copies per batch)
    "time_limit": 0,  # seconds; training stops after the epoch that passes it (0: none)
}

KINDS = {"mlp": DEFAULTS, "frames": FRAMES_DEFAULTS}


def load_config(path: str | None) -> dict[str, Any]:
    """The YAML config over its kind's defaults; TORCHFIT_EPOCHS overrides `epochs`.

    `kind` (default `mlp`) picks the model and so the keys that are allowed.
    """
    loaded: dict[str, Any] = {}
    if path:
        loaded = parse_yaml(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise SystemExit(f"torchfit: {path} must be a YAML mapping")
    kind = loaded.pop("kind", "mlp")
    if kind not in KINDS:
        raise SystemExit(f"torchfit: unknown kind {kind!r} in {path}; known: {sorted(KINDS)}")
    config = dict(KINDS[kind])
    unknown = sorted(set(loaded) - set(config))
    if unknown:
        raise SystemExit(f"torchfit: unknown config keys {unknown}; known: {sorted(config)}")
    config.update(loaded)
    if os.environ.get("TORCHFIT_EPOCHS"):
        config["epochs"] = int(os.environ["TORCHFIT_EPOCHS"])
    if kind != "mlp":
        config["kind"] = kind  # the mlp config stays as it always was (its metrics show it)
    return config


def parse_yaml(text: str) -> Any:
    """PyYAML's safe_load, or where PyYAML is missing a flat `key: value` mapping (scalars
    and `[a, b]` lists, `#` comments): enough for torchfit's own configs."""
    if yaml is not None:
        return yaml.safe_load(text)
    out: dict[str, Any] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep or line[0].isspace():
            raise SystemExit(f"torchfit: line {n}: only flat `key: value` configs can be read without PyYAML")
        value = value.strip()
        if value.startswith("[") and value.endswith("]"):
            out[key.strip()] = [_scalar(v.strip()) for v in value[1:-1].split(",") if v.strip()]
        else:
            out[key.strip()] = _scalar(value)
    return out


def _scalar(v: str) -> Any:
    if v.lower() in ("true", "yes", "on"):
        return True
    if v.lower() in ("false", "no", "off"):
        return False
    if v.lower() in ("", "null", "~"):
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v.strip("'\"")


def csv_files(where: str) -> list[Path]:
    """Every .csv under a file or folder, in name order."""
    p = Path(where)
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*.csv") if f.is_file())
    if not files:
        raise SystemExit(f"torchfit: no .csv file under {where} (give one with --data)")
    return files


def read_table(where: str) -> tuple[list[str], list[list[float]]]:
    """Header and float rows of every .csv under `where` (they must share the header)."""
    header: list[str] | None = None
    rows: list[list[float]] = []
    for path in csv_files(where):
        with open(path, newline="") as fh:
            reader = csv.reader(line for line in fh if line.strip() and not line.startswith("#"))
            head = [h.strip() for h in next(reader)]
            if header is None:
                header = head
            elif head != header:
                raise SystemExit(f"torchfit: {path} has columns {head}, expected {header}")
            for n, row in enumerate(reader, start=2):
                try:
                    rows.append([float(v) for v in row])
                except ValueError:
                    raise SystemExit(f"torchfit: {path}:{n}: not numbers: {row}") from None
    assert header is not None
    return header, rows
