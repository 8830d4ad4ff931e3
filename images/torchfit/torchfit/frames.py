"""The `frames` kind: localise spots in microscopy-like frames with a small convolutional net.

In the spirit of DECODE (single-molecule localisation): each frame holds Gaussian spots at
random sub-pixel positions on a background, with Poisson noise, all generated from a seed on
the training device (no download). The network sees the whole frame at full resolution and
predicts three maps: the logit that a spot's centre lies in each pixel, and the spot's
sub-pixel offset (dx, dy) from that pixel's centre. Localisations are the local maxima of the
probability map above 0.5, moved by their offsets.

The training step is written the way a GPU wants it (see `Trainer`): data already on the
device (or pinned host memory and non-blocking copies when generated on the CPU), the loss
summed on the device with no host sync per step, bf16 autocast on CUDA, the fused Adam, and
torch.compile where it works (a failed compile falls back to eager and says so).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger("torchfit.frames")

POS_WEIGHT = 4.0  # spots cover a few pixels of thousands: weigh the positive pixels up
MATCH_RADIUS = 1.5  # pixels: a localisation this close to a true spot counts as found


# -- the data ------------------------------------------------------------------------------


def make_frames(n: int, config: dict[str, Any], seed: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """`n` frames and their ground truth, the same for the same seed on the same device type.

    Returns `frames` (n, 1, S, S) photon counts (float32), `target` (n, 3, S, S): the spot
    map and the sub-pixel offsets from the pixel centre, `positions` (n, K, 2) x, y in pixels
    (pixel i spans [i, i+1)) and `present` (n, K) which of the K slots hold a spot.
    """
    device = torch.device(device)
    size, k = int(config["frame_size"]), 2 * int(config["spots"])
    sigma, background = float(config["psf_sigma"]), float(config["background"])
    lo, hi = (float(v) for v in config["photons"])
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    pos = torch.rand(n, k, 2, generator=g, device=device) * size
    present = torch.rand(n, k, generator=g, device=device) < 0.5
    photons = (lo + (hi - lo) * torch.rand(n, k, generator=g, device=device)) * present
    # A Gaussian PSF normalised to the spot's photons, separable: (n,k,S) along y and x.
    centres = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    gx = torch.exp(-((centres - pos[..., 0:1]) ** 2) / (2 * sigma**2))
    gy = torch.exp(-((centres - pos[..., 1:2]) ** 2) / (2 * sigma**2))
    rate = torch.einsum("nk,nky,nkx->nyx", photons / (2 * math.pi * sigma**2), gy, gx) + background
    frames = torch.poisson(rate, generator=g).unsqueeze(1)

    # Targets: scattered into one flat buffer with a spare last cell for the absent slots, so
    # nothing here needs the host (no boolean indexing, no nonzero).
    ix = pos[..., 0].floor().long().clamp_(0, size - 1)
    iy = pos[..., 1].floor().long().clamp_(0, size - 1)
    cells = n * size * size
    flat = torch.arange(n, device=device).unsqueeze(1) * size * size + iy * size + ix
    flat = torch.where(present, flat, torch.full_like(flat, cells)).flatten()
    target = torch.zeros(3, cells + 1, device=device)
    target[0].index_put_((flat,), torch.ones_like(flat, dtype=torch.float32))
    target[1].index_put_((flat,), (pos[..., 0] - ix - 0.5).flatten())
    target[2].index_put_((flat,), (pos[..., 1] - iy - 0.5).flatten())
    target = target[:, :cells].reshape(3, n, size, size).transpose(0, 1).contiguous()
    return {"frames": frames, "target": target, "positions": pos, "present": present}


# -- the model -----------------------------------------------------------------------------


class FrameNet(nn.Module):
    """3x3 convolutions at full resolution, then a 1x1 head: spot logit, dx, dy per pixel.

    The input's normalisation travels in the state dict (buffers), so predict needs nothing else.
    """

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 1
        for c in channels:
            layers += [nn.Conv2d(width, int(c), 3, padding=1), nn.ReLU(inplace=True)]
            width = int(c)
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, 3, 1)
        self.register_buffer("x_mean", torch.zeros(()))
        self.register_buffer("x_std", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body((x - self.x_mean) / self.x_std))


def frames_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the spot map plus the offsets' squared error where spots are."""
    out = out.float()
    p = target[:, 0]
    pos_weight = torch.tensor(POS_WEIGHT, device=out.device)
    bce = F.binary_cross_entropy_with_logits(out[:, 0], p, pos_weight=pos_weight)
    offsets = ((out[:, 1:] - target[:, 1:]) ** 2).sum(1)
    return bce + (offsets * p).sum() / p.sum().clamp_min(1.0)


def localise(out: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(m, 4) rows of frame index, x, y (pixels), probability from the network's output."""
    prob = torch.sigmoid(out[:, 0].float())
    peak = (prob > threshold) & (prob == F.max_pool2d(prob.unsqueeze(1), 3, 1, 1).squeeze(1))
    n, iy, ix = peak.nonzero(as_tuple=True)
    x = ix + 0.5 + out[n, 1, iy, ix].float()
    y = iy + 0.5 + out[n, 2, iy, ix].float()
    return torch.stack([n.float(), x, y, prob[n, iy, ix]], 1)


def match(locs: torch.Tensor, positions: torch.Tensor, present: torch.Tensor, radius: float = MATCH_RADIUS) -> dict[str, float]:
    """Recall, precision and RMSE (pixels) of localisations against the true spots."""
    frame = locs[:, 0].long()
    d2 = ((locs[:, None, 1:3] - positions[frame]) ** 2).sum(-1)  # (m, K) to the spots of its frame
    d2 = torch.where(present[frame], d2, torch.full_like(d2, float("inf")))
    best = d2.min(1).values if len(locs) else d2.new_zeros(0)
    hit = best <= radius**2
    found = torch.zeros_like(present)
    if len(locs):
        found[frame[hit], d2.argmin(1)[hit]] = True
    n_true = int(present.sum())
    return {
        "spots": n_true,
        "localisations": len(locs),
        "recall": float(found.sum()) / max(1, n_true),
        "precision": float(hit.sum()) / max(1, len(locs)),
        "rmse_px": float(best[hit].mean().sqrt()) if bool(hit.any()) else float("nan"),
    }


# -- training ------------------------------------------------------------------------------


def resolve_precision(wanted: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: fp32). `auto` is bf16 on a CUDA device that supports it."""
    wanted = str(wanted).lower()
    if wanted not in ("auto", "fp32", "bf16"):
        raise SystemExit(f"torchfit: precision must be auto, fp32 or bf16, not {wanted!r}")
    if wanted == "fp32" or (wanted == "auto" and device.type != "cuda"):
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        log.warning("this GPU has no bf16: training in fp32")
        return None
    return torch.bfloat16


def resolve_compile(wanted: Any, device: torch.device) -> bool:
    """Whether to try torch.compile: `auto` on CUDA only (on the CPU it mostly costs time)."""
    if str(wanted).lower() == "auto":
        return device.type == "cuda" and hasattr(torch, "compile")
    if isinstance(wanted, bool):
        return wanted and hasattr(torch, "compile")
    raise SystemExit(f"torchfit: compile must be auto, true or false, not {wanted!r}")


class Trainer:
    """The model, its optimiser and one training step, set up for `device`.

    `step(x, y)` returns the loss as a tensor on the device and never waits for the device;
    the caller sums those and reads the sum once per epoch. The first step runs the compiled
    version when compiling was asked for; if it fails, that step reruns eagerly and
    `compile_error` says why.
    """

    def __init__(self, config: dict[str, Any], device: torch.device, compile: Any = None, precision: str | None = None) -> None:
        if device.type == "cuda" and device.index is None:  # cuda -> cuda:N, as tensors report it
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self.model = FrameNet(list(config["channels"])).to(device)
        self.channels_last = device.type == "cuda"  # what cuDNN's bf16 convolutions like best
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        fused = {"fused": True} if device.type == "cuda" else {}
        self.opt = torch.optim.Adam(self.model.parameters(), lr=float(config["learning_rate"]), **fused)
        self.amp_dtype = resolve_precision(precision or config["precision"], device)
        self.compile_wanted = resolve_compile(config["compile"] if compile is None else compile, device)
        self.compiled = False
        self.compile_error: str | None = None
        self.compile_seconds: float | None = None
        self._loss = self._eager_loss
        if self.compile_wanted:
            self._loss = torch.compile(self._eager_loss)
            self.compiled = True
        self._first = True
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    @property
    def precision(self) -> str:
        return "bf16" if self.amp_dtype == torch.bfloat16 else "fp32"

    def _eager_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            out = self.model(x)
        return frames_loss(out, y)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """A batch on the device: from pinned host memory without blocking when it is not there yet."""
        if x.device.type == "cpu" and self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        elif x.device != self.device:
            x = x.to(self.device)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _run(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self._loss(x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self._first:
            return self._run(x, y)
        self._first = False
        if not self.compiled:
            return self._run(x, y)
        started = time.perf_counter()
        try:
            loss = self._run(x, y)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.compile_seconds = time.perf_counter() - started
            return loss
        except Exception as exc:  # noqa: BLE001 - any compiler failure: train eagerly instead
            self.compile_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]
            log.warning("torch.compile failed (%s); training without it", self.compile_error)
            self.compiled = False
            self._loss = self._eager_loss
            self.opt.zero_grad(set_to_none=True)
            return self._run(x, y)

    @torch.no_grad()
    def evaluate(self, frames: torch.Tensor, target: torch.Tensor, batch: int) -> torch.Tensor:
        """The mean loss over frames (a tensor on the device) with the eager model."""
        self.model.eval()
        total = torch.zeros((), device=self.device)
        for i in range(0, len(frames), batch):
            x, y = self.to_device(frames[i : i + batch]), self.to_device(target[i : i + batch])
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
                out = self.model(x)
            total += frames_loss(out, y) * len(x)
        self.model.train()
        return total / max(1, len(frames))

    @torch.no_grad()
    def predict(self, frames: torch.Tensor, batch: int) -> torch.Tensor:
        """The network's output (n, 3, S, S) in fp32."""
        self.model.eval()
        outs = []
        for i in range(0, len(frames), batch):
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
                outs.append(self.model(self.to_device(frames[i : i + batch])).float())
        self.model.train()
        return torch.cat(outs)


def data_device(config: dict[str, Any], device: torch.device) -> torch.device:
    where = str(config["generate_on"]).lower()
    if where not in ("device", "cpu"):
        raise SystemExit(f"torchfit: generate_on must be device or cpu, not {where!r}")
    return device if where == "device" else torch.device("cpu")


def fit(config: dict[str, Any], device: torch.device, on_epoch: Callable[[int, float, float], None] | None = None) -> dict[str, Any]:
    """Train a FrameNet on generated frames; returns the trainer, history and metrics."""
    torch.manual_seed(int(config["seed"]))
    seed = int(config["seed"])
    where = data_device(config, device)
    train_set = make_frames(int(config["train_frames"]), config, seed, where)
    val_set = make_frames(int(config["validation_frames"]), config, seed + 1_000_003, where)
    batch = int(config["batch_size"])
    n_train = len(train_set["frames"])
    if n_train < batch:
        raise SystemExit(f"torchfit: train_frames ({n_train}) must be at least batch_size ({batch})")
    trainer = Trainer(config, device)
    sample = train_set["frames"][: min(n_train, 512)].float()
    trainer.model.x_mean.fill_(float(sample.mean()))
    trainer.model.x_std.fill_(float(sample.std().clamp_min(1e-6)))
    log.info(
        "frames: %d train, %d validation, %dx%d px, batch %d, device %s, data on %s, precision %s, compile %s",
        n_train,
        len(val_set["frames"]),
        config["frame_size"],
        config["frame_size"],
        batch,
        device,
        where,
        trainer.precision,
        trainer.compile_wanted,
    )

    g = torch.Generator(device=where)
    g.manual_seed(seed + 7)
    steps_per_epoch = n_train // batch  # whole batches only: one shape, one compiled graph
    epochs, limit = int(config["epochs"]), float(config.get("time_limit") or 0)
    history: dict[str, list[float]] = {"train": [], "validation": []}
    started = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(n_train, device=where, generator=g)
        total = torch.zeros((), device=device)
        for i in range(steps_per_epoch):
            idx = order[i * batch : (i + 1) * batch]
            total += trainer.step(trainer.to_device(train_set["frames"][idx]), trainer.to_device(train_set["target"][idx]))
        val = trainer.evaluate(val_set["frames"], val_set["target"], batch)
        history["train"].append(float(total / steps_per_epoch))  # the one host sync of an epoch
        history["validation"].append(float(val))
        if on_epoch:
            on_epoch(epoch, history["train"][-1], history["validation"][-1])
        if limit and time.perf_counter() - started > limit and epoch + 1 < epochs:
            log.warning("time_limit %.0f s reached: stopping after epoch %d of %d", limit, epoch + 1, epochs)
            break
    seconds = time.perf_counter() - started
    out = trainer.predict(val_set["frames"][:256], batch)
    quality = match(localise(out), val_set["positions"][:256], val_set["present"][:256])
    steps = len(history["train"]) * steps_per_epoch
    return {
        "trainer": trainer,
        "history": history,
        "seconds": seconds,
        "steps": steps,
        "quality": quality,
        "epochs_run": len(history["train"]),
    }


def model_meta(config: dict[str, Any]) -> dict[str, Any]:
    """What predict needs besides the weights: the architecture and the generator's settings."""
    keys = ("frame_size", "spots", "psf_sigma", "photons", "background", "channels", "seed")
    return {"kind": "frames", **{k: config[k] for k in keys}}
