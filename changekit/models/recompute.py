"""Activation recomputation (checkpointing) helpers shared by the model families.

Two levels, both exact (the recomputed forward is deterministic: no dropout inside the recomputed part):

* *selective* (:func:`recompute_dw_gelu`, on by default while training): Mix-FFN blocks keep only their first 1x1
  conv's output and recompute the depth-wise 3x3 conv and GELU in backward, instead of keeping both of their
  outputs at 4x the width of the stage. Costs a few percent of a training step, saves about a third of the FFN
  activations (the largest maps of MiT / BAN at 1/4 resolution).
* *full* (:func:`maybe_checkpoint`, opt-in, e.g. BAN's ``checkpoint_bitab``): a whole stage is recomputed in
  backward, for large crops that do not fit otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

__all__ = ["maybe_checkpoint", "recompute_dw_gelu"]


def _recording(module: nn.Module) -> bool:
    return module.training and torch.is_grad_enabled()


def maybe_checkpoint(module: nn.Module, enabled: bool, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, under non-reentrant activation checkpointing when ``enabled`` and ``module`` is training."""
    if enabled and _recording(module):
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def recompute_dw_gelu(module: nn.Module, dw: nn.Module, act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(dw(x))``; while training, only ``x`` is kept for backward (dw conv and activation are recomputed)."""
    if _recording(module) and getattr(module, "recompute", True):
        return checkpoint(lambda t: act(dw(t)), x, use_reentrant=False)
    return act(dw(x))
