"""The model: a small MLP with the normalisation of its inputs and target built in."""

from __future__ import annotations

import os

import torch
from torch import nn


class Regressor(nn.Module):
    """Standardises features, runs an MLP, and maps the output back to the target's scale."""

    def __init__(self, n_features: int, hidden: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        # Buffers travel with the state dict, so predict needs nothing else.
        self.register_buffer("x_mean", torch.zeros(n_features))
        self.register_buffer("x_std", torch.ones(n_features))
        self.register_buffer("y_mean", torch.zeros(1))
        self.register_buffer("y_std", torch.ones(1))

    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        """The output in standard units (what the loss is computed on)."""
        return self.net((x - self.x_mean) / self.x_std).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaled(x) * self.y_std + self.y_mean


def pick_device() -> torch.device:
    """The GPU when one is visible (unless TORCHFIT_DEVICE=cpu), else the CPU."""
    wanted = os.environ.get("TORCHFIT_DEVICE", "auto")
    if wanted == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if wanted == "cuda":
        raise SystemExit("torchfit: TORCHFIT_DEVICE=cuda but no GPU is visible (run with --gpu 1 on the gpu pool)")
    return torch.device("cpu")
