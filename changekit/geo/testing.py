"""Tiny change models for tests and benchmarks of the scene pipeline (importable, so spawned processes see them)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class ConstantModel(nn.Module):
    """Predicts change probability ``p`` everywhere (a seam test: the blended output must be exactly flat)."""

    num_classes = 2

    def __init__(self, p: float = 0.7, in_channels: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.register_buffer("logit", torch.tensor(math.log(p / (1 - p))))

    def forward(self, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        b, _, h, w = t1.shape
        z = self.logit.expand(b, 1, h, w)
        return torch.cat([torch.zeros_like(z), z], 1)


class ConvModel(nn.Module):
    """Two 3x3 convolutions of the stacked dates: translation-equivariant, output depends on the content."""

    num_classes = 2

    def __init__(self, in_channels: int = 3, seed: int = 0) -> None:
        super().__init__()
        self.in_channels = in_channels
        g = torch.Generator().manual_seed(seed)
        self.c1 = nn.Conv2d(2 * in_channels, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 2, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(torch.cat([t1, t2], 1))))


class DiffModel(nn.Module):
    """``sigmoid(gain * (mean |t2 - t1| over a 3x3 neighbourhood) - bias)``: a fast detector for synthetic scenes."""

    num_classes = 2

    def __init__(self, in_channels: int = 3, gain: float = 8.0, bias: float = 2.0) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.conv = nn.Conv2d(in_channels, 1, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.fill_(gain / (9 * in_channels))
            self.conv.bias.fill_(-bias)

    def forward(self, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        d = self.conv((t2 - t1).abs())
        return torch.cat([torch.zeros_like(d), d], 1)


def ddp_worker(rank: int, world_size: int, port: int, t1: str, t2: str, out: str, kwargs: dict) -> None:
    """Entry point for ``torch.multiprocessing.spawn``: one rank of a CPU (gloo) scene run."""
    import os

    from changekit.geo.scene import run_scene

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    kwargs = dict(kwargs)
    model = kwargs.pop("model_factory")()
    run_scene(t1, t2, out, model=model, progress=False, **kwargs)
