"""`python -m torchfit.predict`: predict the target for the rows of the .csv data.

--artifact is the folder a train job wrote (model.pt, model.json), found anywhere under it.
Writes predictions.csv (and metrics.json when the data has the target column) to --output.

A `frames` model (model.json says its kind) localises spots in the frames of --data (.npy or
.pt arrays, (n, H, W) or (H, W), any size); where --data holds none (or is not given) it makes
test frames with the generator it was trained on and scores itself against their truth.
It writes localisations.csv (frame, x, y in pixels, probability) and metrics.json. Always on
the CPU unless TORCHFIT_DEVICE asks for another device, whatever device trained the model.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch

from torchfit.data import read_table
from torchfit.model import Regressor, pick_device


def _find(folder: str, name: str) -> Path:
    hits = sorted(Path(folder).rglob(name))
    if not hits:
        raise SystemExit(f"torchfit: no {name} under {folder} (pass a train job's artifact: --artifact jobs/<id>/artifact)")
    return hits[0]


def predict(args: argparse.Namespace) -> dict:
    """Load the model, predict, write the outputs, return the metrics."""
    meta = json.loads(_find(args.artifact, "model.json").read_text())
    if meta.get("kind") == "frames":
        return predict_frames(args, meta)
    if not args.data:
        raise SystemExit("torchfit: --data is required (a .csv file or folder of them)")
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


FRAME_SUFFIXES = (".npy", ".pt")
TEST_FRAMES = 64


def read_frames(where: str | None) -> list[tuple[str, torch.Tensor]]:
    """(name, (n, H, W) float32) for every .npy / .pt file under `where`, in name order."""
    if not where:
        return []
    p = Path(where)
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.suffix in FRAME_SUFFIXES and f.is_file())
    found = []
    for f in files:
        if f.suffix == ".npy":
            import numpy

            t = torch.from_numpy(numpy.load(f, allow_pickle=False).astype("float32"))
        else:
            t = torch.load(f, map_location="cpu", weights_only=True)
            if not isinstance(t, torch.Tensor):
                raise SystemExit(f"torchfit: {f} holds no tensor")
            t = t.float()
        if t.dim() == 2:
            t = t.unsqueeze(0)
        if t.dim() == 4 and t.shape[1] == 1:
            t = t.squeeze(1)
        if t.dim() != 3:
            raise SystemExit(f"torchfit: {f}: frames must be (n, H, W) or (H, W), not {tuple(t.shape)}")
        found.append((f.name, t))
    return found


def predict_frames(args: argparse.Namespace, meta: dict) -> dict:
    """Localise spots with a `frames` model on the CPU (or TORCHFIT_DEVICE)."""
    import os

    from torchfit import frames as fr

    device = torch.device("cpu") if os.environ.get("TORCHFIT_DEVICE", "cpu") in ("cpu", "auto") else pick_device()
    model = fr.FrameNet(meta["channels"])
    model.load_state_dict(torch.load(_find(args.artifact, "model.pt"), map_location="cpu", weights_only=True))
    model.to(device).eval()
    given = read_frames(args.data)
    truth = None
    if given:
        source = ", ".join(f"{name} {tuple(t.shape)}" for name, t in given)
        stacks = [t for _, t in given]
    else:
        # Test frames the model has never seen: the training generator with another seed.
        test = fr.make_frames(TEST_FRAMES, meta, int(meta["seed"]) + 2_000_003, "cpu")
        truth = test
        stacks = [test["frames"].squeeze(1)]
        source = f"{TEST_FRAMES} generated test frames ({meta['frame_size']}x{meta['frame_size']})"
    rows: list[list[float]] = []
    base = 0
    locs_all = []
    with torch.no_grad():
        for stack in stacks:
            for i in range(0, len(stack), 64):
                out = model(stack[i : i + 64].unsqueeze(1).to(device)).cpu()
                locs = fr.localise(out)
                locs[:, 0] += base + i
                locs_all.append(locs)
            base += len(stack)
    locs = torch.cat(locs_all) if locs_all else torch.zeros(0, 4)
    rows = locs.tolist()
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "localisations.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "x", "y", "probability"])
        for f, x, y, p in rows:
            w.writerow([int(f), f"{x:.4f}", f"{y:.4f}", f"{p:.4f}"])
    metrics: dict = {
        "kind": "frames",
        "frames": base,
        "localisations": len(rows),
        "source": source,
        "device": str(device),
        "model_trained_on": meta.get("trained_on"),
    }
    if truth is not None:
        metrics.update(fr.match(locs, truth["positions"], truth["present"]))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"torchfit: wrote {len(rows)} localisations in {base} frames to {out_dir / 'localisations.csv'}; {metrics}", flush=True)
    return metrics


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="torchfit.predict", description=__doc__)
    p.add_argument("--artifact", required=True, help="folder with a trained model (model.pt, model.json)")
    p.add_argument("--data", default=None, help=".csv file or folder of them; for a frames model .npy/.pt frames (optional)")
    p.add_argument("--output", required=True, help="folder for predictions.csv")
    predict(p.parse_args(argv))


if __name__ == "__main__":
    main()
