"""`python -m torchfit.train`: fit the model to the .csv data with the YAML config.

The config's `kind` picks the model: `mlp` (the default) fits the .csv data; `frames` trains a
convolutional spot localiser on frames it generates from the seed (--data is not read).
Writes the model (model.pt, model.json) to --model, metrics.json, losses.csv and
loss_curve.png (matplotlib, 800x500) to --output, and train.log to --log.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path

import torch

from torchfit.data import load_config, read_table
from torchfit.model import Regressor, pick_device

log = logging.getLogger("torchfit.train")


def _setup_logging(log_dir: Path) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    # stdout has no time of its own: whoever collects it (JobCloud, a terminal) stamps each
    # line already. train.log is read on its own later, so it keeps the time.
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    to_file = logging.FileHandler(log_dir / "train.log")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for handler in (console, to_file):
        logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)


def train(args: argparse.Namespace) -> dict:
    """Train, write every output, return the metrics."""
    config = load_config(args.config)
    if config.get("kind") == "frames":
        return train_frames(args, config)
    if not args.data:
        raise SystemExit("torchfit: --data is required (a .csv file or folder of them)")
    torch.manual_seed(int(config["seed"]))
    header, rows = read_table(args.data)
    target = config["target"]
    if target not in header:
        raise SystemExit(f"torchfit: target column {target!r} not in {header}")
    features = [h for h in header if h != target]
    t = header.index(target)
    data = torch.tensor(rows, dtype=torch.float32)
    x, y = data[:, [header.index(f) for f in features]], data[:, t]
    perm = torch.randperm(len(rows))
    n_val = int(len(rows) * float(config["validation_fraction"]))
    if len(rows) - n_val < 2:
        raise SystemExit(f"torchfit: {len(rows)} rows are too few to train on")
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    device = pick_device()
    log.info(
        "device %s, torch %s, %d rows (%d validation), features %s, target %s, config %s",
        device,
        torch.__version__,
        len(rows),
        n_val,
        features,
        target,
        config,
    )

    model = Regressor(len(features), list(config["hidden"]))
    model.x_mean.copy_(x[train_idx].mean(0))
    model.x_std.copy_(x[train_idx].std(0).clamp_min(1e-8))
    model.y_mean.fill_(float(y[train_idx].mean()))
    model.y_std.fill_(float(y[train_idx].std().clamp_min(1e-8)))
    model.to(device)
    xt, yt = x[train_idx].to(device), y[train_idx].to(device)
    xv, yv = x[val_idx].to(device), y[val_idx].to(device)
    opt = torch.optim.Adam(model.parameters(), lr=float(config["learning_rate"]))
    batch = int(config["batch_size"])
    history: dict[str, list[float]] = {"train": [], "validation": []}
    started = time.perf_counter()
    epochs = int(config["epochs"])
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xt), device=device)
        total = 0.0
        for i in range(0, len(xt), batch):
            idx = order[i : i + batch]
            loss = torch.nn.functional.mse_loss(model.scaled(xt[idx]), (yt[idx] - model.y_mean) / model.y_std)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history["train"].append(total / len(xt))
        model.eval()
        with torch.no_grad():
            vloss = (
                torch.nn.functional.mse_loss(model.scaled(xv), (yv - model.y_mean) / model.y_std) if n_val else torch.tensor(float("nan"))
            )
        history["validation"].append(float(vloss))
        if epoch == 0 or (epoch + 1) % max(1, epochs // 10) == 0 or epoch + 1 == epochs:
            log.info("epoch %d/%d train loss %.5f validation loss %.5f", epoch + 1, epochs, history["train"][-1], history["validation"][-1])
    seconds = time.perf_counter() - started

    model_dir, out_dir = Path(args.model), Path(args.output)
    model_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.cpu()
    torch.save(model.state_dict(), model_dir / "model.pt")
    meta = {"features": features, "target": target, "hidden": list(config["hidden"]), "torch": torch.__version__, "trained_on": str(device)}
    (model_dir / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    with open(out_dir / "losses.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "train_loss", "validation_loss"])
        for e, (a, b) in enumerate(zip(history["train"], history["validation"]), start=1):
            w.writerow([e, f"{a:.6g}", f"{b:.6g}"])
    _write_loss_curve(out_dir, history)
    metrics = {
        "epochs": epochs,
        "rows": len(rows),
        "train_loss": history["train"][-1],
        "validation_loss": history["validation"][-1],
        "training_seconds": round(seconds, 3),
        "device": str(device),
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("done in %.1f s: %s", seconds, metrics)
    return metrics


def train_frames(args: argparse.Namespace, config: dict) -> dict:
    """The `frames` kind: a conv net localising spots in generated frames (torchfit/frames.py)."""
    from torchfit import frames

    device = pick_device()
    if args.data:
        log.info("kind frames: the frames are generated from the seed; --data %s is not read", args.data)
    log.info("device %s, torch %s, config %s", device, torch.__version__, config)
    epochs = int(config["epochs"])

    def on_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
        if epoch == 0 or (epoch + 1) % max(1, epochs // 10) == 0 or epoch + 1 == epochs:
            log.info("epoch %d/%d train loss %.5f validation loss %.5f", epoch + 1, epochs, train_loss, val_loss)

    result = frames.fit(config, device, on_epoch)
    trainer, history = result["trainer"], result["history"]
    if trainer.compile_error:
        log.warning("trained without torch.compile: %s", trainer.compile_error)

    model_dir, out_dir = Path(args.model), Path(args.output)
    model_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The plain module's weights (never the compiled wrapper's), contiguous and on the CPU:
    # predict loads them anywhere with map_location="cpu".
    state = {k: v.detach().cpu().contiguous() for k, v in trainer.model.state_dict().items()}
    torch.save(state, model_dir / "model.pt")
    meta = {**frames.model_meta(config), "torch": torch.__version__, "trained_on": str(device)}
    (model_dir / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    with open(out_dir / "losses.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "train_loss", "validation_loss"])
        for e, (a, b) in enumerate(zip(history["train"], history["validation"]), start=1):
            w.writerow([e, f"{a:.6g}", f"{b:.6g}"])
    _write_loss_curve(out_dir, history, ylabel="loss (spot BCE + offset MSE)")
    steps, seconds = result["steps"], result["seconds"]
    metrics = {
        "kind": "frames",
        "epochs": result["epochs_run"],
        "frames": int(config["train_frames"]),
        "train_loss": history["train"][-1],
        "validation_loss": history["validation"][-1],
        **{f"validation_{k}": v for k, v in result["quality"].items()},
        "training_seconds": round(seconds, 3),
        "ms_per_step": round(1000 * seconds / max(1, steps), 3),
        "device": str(device),
        "precision": trainer.precision,
        "compiled": trainer.compiled,
        "compile_error": trainer.compile_error,
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("done in %.1f s: %s", seconds, metrics)
    return metrics


def _write_loss_curve(out_dir: Path, history: dict[str, list[float]], **kwargs: str) -> None:
    """loss_curve.png; skipped with a warning where matplotlib is missing (a bare GPU host)."""
    try:
        from torchfit.plot import loss_curve_png
    except ImportError as exc:
        log.warning("no loss_curve.png: %s", exc)
        return
    (out_dir / "loss_curve.png").write_bytes(loss_curve_png(history, **kwargs))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="torchfit.train", description=__doc__)
    p.add_argument("--data", default=None, help=".csv file or folder of them (required by the mlp kind)")
    p.add_argument("--config", default=None, help="YAML config (see sample/config.yaml, sample/frames.yaml)")
    p.add_argument("--model", required=True, help="folder for the trained model (the job's artifact)")
    p.add_argument("--output", required=True, help="folder for metrics and the loss curve")
    p.add_argument("--log", required=True, help="folder for train.log")
    args = p.parse_args(argv)
    _setup_logging(Path(args.log))
    train(args)


if __name__ == "__main__":
    main()
