"""`python -m torchfit.predict`: predict the target for the rows of the .csv data.

--artifact is the folder a train job wrote (model.pt, model.json), found anywhere under it.
Writes predictions.csv (and metrics.json when the data has the target column) to --output.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch

from torchfit.data import read_table
from torchfit.model import Regressor


def _find(folder: str, name: str) -> Path:
    hits = sorted(Path(folder).rglob(name))
    if not hits:
        raise SystemExit(f"torchfit: no {name} under {folder} (pass a train job's artifact: --artifact jobs/<id>/artifact)")
    return hits[0]


def predict(args: argparse.Namespace) -> dict:
    """Load the model, predict, write the outputs, return the metrics."""
    meta = json.loads(_find(args.artifact, "model.json").read_text())
    model = Regressor(len(meta["features"]), meta["hidden"])
    model.load_state_dict(torch.load(_find(args.artifact, "model.pt"), map_location="cpu", weights_only=True))
    model.eval()
    header, rows = read_table(args.data)
    missing = [f for f in meta["features"] if f not in header]
    if missing:
        raise SystemExit(f"torchfit: the data lacks the model's features {missing}")
    x = torch.tensor([[r[header.index(f)] for f in meta["features"]] for r in rows], dtype=torch.float32)
    with torch.no_grad():
        y_hat = model(x)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*meta["features"], f"{meta['target']}_predicted"])
        for feats, yh in zip(x.tolist(), y_hat.tolist()):
            w.writerow([*(f"{v:.6g}" for v in feats), f"{yh:.6g}"])
    metrics: dict = {"rows": len(rows), "model_trained_on": meta.get("trained_on")}
    if meta["target"] in header:
        y = torch.tensor([r[header.index(meta["target"])] for r in rows])
        metrics["mse"] = float(torch.mean((y_hat - y) ** 2))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"torchfit: wrote {len(rows)} predictions to {out / 'predictions.csv'}; {metrics}", flush=True)
    return metrics


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="torchfit.predict", description=__doc__)
    p.add_argument("--artifact", required=True, help="folder with a trained model (model.pt, model.json)")
    p.add_argument("--data", required=True, help=".csv file or folder of them")
    p.add_argument("--output", required=True, help="folder for predictions.csv")
    predict(p.parse_args(argv))


if __name__ == "__main__":
    main()
