"""Losses for change detection: cross-entropy with an ignore index (mmseg semantics) and optional Dice."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from changekit.errors import ConfigError

__all__ = ["cross_entropy", "dice_loss", "ohem_weights", "ChangeLoss"]


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


def ohem_weights(
    logits: torch.Tensor, target: torch.Tensor, thresh: float | None = 0.7, min_kept: int = 100000, ignore_index: int = 255
) -> torch.Tensor:
    """Pixel weights (0/1) of mmseg's ``OHEMPixelSampler``: keep valid pixels whose ground-truth class
    probability is below ``max(thresh, p_k)``, where ``p_k`` is the ``min_kept * batch``-th smallest such
    probability (with ``thresh=None``: the ``min_kept * batch`` pixels of highest CE loss)."""
    with torch.no_grad():
        valid = target != ignore_index
        weight = logits.new_zeros(target.shape)
        batch_kept = int(min_kept) * target.shape[0]
        safe = target.clamp(0, logits.shape[1] - 1).masked_fill(~valid, 0)
        if thresh is not None:
            prob = logits.softmax(1).gather(1, safe.unsqueeze(1)).squeeze(1)[valid]
            sorted_prob, _ = prob.sort()
            min_threshold = sorted_prob[min(batch_kept, sorted_prob.numel() - 1)] if sorted_prob.numel() else 0.0
            threshold = max(float(min_threshold), float(thresh))
            weight[valid] = (prob < threshold).to(weight.dtype)
        else:
            losses = F.cross_entropy(logits, safe, reduction="none")[valid]
            w = torch.zeros_like(losses)
            w[losses.argsort(descending=True)[:batch_kept]] = 1.0
            weight[valid] = w
    return weight


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

    ``ohem: {thresh: 0.7, min_kept: 100000}`` re-weights the CE pixels as mmseg's ``OHEMPixelSampler``
    (kept pixels weight 1, others 0; the mean is still over all pixels, as mmseg's decode-head loss).

    Logits are resized (bilinear, ``align_corners=False``) to the label size before the loss, as mmseg's
    ``BaseDecodeHead.loss_by_feat`` does. :meth:`forward` returns ``(total, {name: value})``.
    """

    KNOWN = {"ce", "dice", "avg_non_ignore", "class_weight", "ohem"}

    def __init__(self, config: Mapping[str, Any] | None = None, ignore_index: int = 255) -> None:
        super().__init__()
        config = dict(config or {"ce": 1.0})
        unknown = set(config) - self.KNOWN
        if unknown:
            raise ConfigError(f"model.loss: unknown entries {sorted(unknown)}; use {sorted(self.KNOWN)}")
        self.ce_weight = float(config.get("ce", 0.0) or 0.0)
        self.dice_weight = float(config.get("dice", 0.0) or 0.0)
        if self.ce_weight <= 0 and self.dice_weight <= 0 and not config.get("ohem"):
            raise ConfigError("model.loss: give a positive weight to 'ce' and/or 'dice'")
        self.avg_non_ignore = bool(config.get("avg_non_ignore", False))
        ohem = config.get("ohem")
        if ohem and not isinstance(ohem, dict):
            raise ConfigError("model.loss.ohem: give {thresh: 0.7, min_kept: 100000} (mmseg OHEMPixelSampler)")
        if ohem:
            unknown = set(ohem) - {"thresh", "min_kept"}
            if unknown:
                raise ConfigError(f"model.loss.ohem: unknown keys {sorted(unknown)}; use thresh, min_kept")
            if "ce" not in config:
                self.ce_weight = 1.0  # OHEM re-weights the cross-entropy
        self.ohem = dict(ohem) if ohem else None
        cw = config.get("class_weight")
        self.register_buffer("class_weight", torch.tensor(cw, dtype=torch.float32) if cw else None, persistent=False)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        logits = logits.float()
        parts: dict[str, torch.Tensor] = {}
        if self.ce_weight > 0 and self.ohem:
            w = ohem_weights(logits, target, self.ohem.get("thresh", 0.7), self.ohem.get("min_kept", 100000), self.ignore_index)
            ce = F.cross_entropy(logits, target, weight=self.class_weight, ignore_index=self.ignore_index, reduction="none")
            denom = (target != self.ignore_index).sum().clamp_min(1) if self.avg_non_ignore else ce.numel()
            parts["ce"] = self.ce_weight * ((ce * w).sum() / denom)
        elif self.ce_weight > 0:
            parts["ce"] = self.ce_weight * cross_entropy(
                logits, target, self.ignore_index, self.avg_non_ignore, self.class_weight
            )
        if self.dice_weight > 0:
            parts["dice"] = self.dice_weight * dice_loss(logits, target, self.ignore_index)
        return sum(parts.values()), parts
