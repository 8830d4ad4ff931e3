"""Reading the CSV tables and the YAML config of a job."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    "target": "y",
    "hidden": [64, 64],
    "epochs": 200,
    "batch_size": 64,
    "learning_rate": 0.01,
    "validation_fraction": 0.2,
    "seed": 0,
}


def load_config(path: str | None) -> dict[str, Any]:
    """The YAML config over the defaults; TORCHFIT_EPOCHS overrides `epochs`."""
    config = dict(DEFAULTS)
    if path:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise SystemExit(f"torchfit: {path} must be a YAML mapping")
        unknown = sorted(set(loaded) - set(DEFAULTS))
        if unknown:
            raise SystemExit(f"torchfit: unknown config keys {unknown}; known: {sorted(DEFAULTS)}")
        config.update(loaded)
    if os.environ.get("TORCHFIT_EPOCHS"):
        config["epochs"] = int(os.environ["TORCHFIT_EPOCHS"])
    return config


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
