"""Losses for change detection: cross-entropy with an ignore index (mmseg semantics) and optional Dice."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from changekit.errors import ConfigError

__all__ = ["cross_entropy", "dice_loss", "ChangeLoss"]


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = 255,
    avg_non_ignore: bool = False,
    class_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy as mmseg's ``CrossEntropyLoss``.

    With ``avg_non_ignore=False`` (mmseg's and open-cd's default) the mean is taken over **all** pixels:
    ignored pixels contribute 0 but stay in the denominator. With ``True`` it is the mean over valid pixels.
    """
    loss = F.cross_entropy(logits, target, weight=class_weight, ignore_index=ignore_index, reduction="none")
    if avg_non_ignore:
        n = (target != ignore_index).sum().clamp_min(1)
        return loss.sum() / n
    return loss.mean()


def dice_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255, smooth: float = 1.0, exponent: int = 2
) -> torch.Tensor:
    """Multi-class soft Dice (mmseg ``DiceLoss`` style: softmax, squared denominators, ignored pixels masked)."""
    num_classes = logits.shape[1]
    prob = logits.softmax(dim=1)
    valid = (target != ignore_index).unsqueeze(1).to(prob.dtype)
    onehot = F.one_hot(target.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2).to(prob.dtype)
    prob, onehot = prob * valid, onehot * valid
    dims = (0, 2, 3)
    inter = (prob * onehot).sum(dims)
    denom = prob.pow(exponent).sum(dims) + onehot.pow(exponent).sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    return 1 - dice.mean()


class ChangeLoss(nn.Module):
    """Weighted sum of losses from a config mapping, e.g. ``{ce: 1.0, dice: 0.5, avg_non_ignore: false}``.

    Logits are resized (bilinear, ``align_corners=False``) to the label size before the loss, as mmseg's
    ``BaseDecodeHead.loss_by_feat`` does. :meth:`forward` returns ``(total, {name: value})``.
    """

    KNOWN = {"ce", "dice", "avg_non_ignore", "class_weight"}

    def __init__(self, config: Mapping[str, Any] | None = None, ignore_index: int = 255) -> None:
        super().__init__()
        config = dict(config or {"ce": 1.0})
        unknown = set(config) - self.KNOWN
        if unknown:
            raise ConfigError(f"model.loss: unknown entries {sorted(unknown)}; use {sorted(self.KNOWN)}")
        self.ce_weight = float(config.get("ce", 0.0) or 0.0)
        self.dice_weight = float(config.get("dice", 0.0) or 0.0)
        if self.ce_weight <= 0 and self.dice_weight <= 0:
            raise ConfigError("model.loss: give a positive weight to 'ce' and/or 'dice'")
        self.avg_non_ignore = bool(config.get("avg_non_ignore", False))
        cw = config.get("class_weight")
        self.register_buffer("class_weight", torch.tensor(cw, dtype=torch.float32) if cw else None, persistent=False)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        logits = logits.float()
        parts: dict[str, torch.Tensor] = {}
        if self.ce_weight > 0:
            parts["ce"] = self.ce_weight * cross_entropy(
                logits, target, self.ignore_index, self.avg_non_ignore, self.class_weight
            )
        if self.dice_weight > 0:
            parts["dice"] = self.dice_weight * dice_loss(logits, target, self.ignore_index)
        return sum(parts.values()), parts
