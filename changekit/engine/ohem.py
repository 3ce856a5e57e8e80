"""Cross-entropy with online hard example mining (OHEM), as mmseg's ``OHEMPixelSampler`` + ``CrossEntropyLoss``.

Config form (the engine maps it here)::

    loss: {ohem: {thresh: 0.7, min_kept: 100000}}

Semantics (mmseg 1.x, which open-cd's DSQNet configs use):

* Logits whose size differs from the label are first resized to it (bilinear, ``align_corners=False``).
* Among the valid pixels (label ≠ ``ignore_index``), ``p`` = softmax probability of the true class.
  With ``batch_kept = min_kept × batch_size`` (mmseg counts ``min_kept`` per image) and the valid probabilities
  sorted ascending, ``threshold = max(sorted[min(batch_kept, n_valid − 1)], thresh)``; a pixel is kept when
  ``p < threshold``. So at least ``batch_kept`` pixels are kept when there are more valid pixels than that (the
  hardest ones), and every pixel with ``p < thresh`` is kept; when there are no more than ``batch_kept`` valid
  pixels, all but the easiest are kept (mmseg's indexing).
* The loss is the per-pixel cross-entropy times the keep mask, **averaged over all pixels of the batch** (kept or
  not, ignored included): mmseg's ``weight_reduce_loss`` with ``reduction='mean'`` and no ``avg_factor``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ohem_mask", "ohem_cross_entropy"]


@torch.no_grad()
def ohem_mask(logits: torch.Tensor, target: torch.Tensor, thresh: float | None = 0.7, min_kept: int = 100000,
              ignore_index: int = 255) -> torch.Tensor:
    """Return the (B, H, W) float mask (1 = kept) of mmseg's ``OHEMPixelSampler`` (probability mode).

    ``logits``: (B, C, H, W) at the label's size; ``target``: (B, H, W) integer labels.
    ``thresh=None`` selects mmseg's loss mode (keep the ``min_kept × B`` pixels with the largest loss).
    """
    target = target.long()
    valid = target != ignore_index
    batch_kept = int(min_kept) * target.shape[0]
    weight = logits.new_zeros(target.shape)
    safe = target.masked_fill(~valid, 0)
    if thresh is not None:
        prob = F.softmax(logits.float(), dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
        valid_prob = prob[valid]
        if valid_prob.numel() > 0:
            sorted_prob = valid_prob.sort().values
            min_threshold = sorted_prob[min(batch_kept, sorted_prob.numel() - 1)].item()
        else:
            min_threshold = 0.0
        threshold = max(min_threshold, float(thresh))
        weight[valid] = (valid_prob < threshold).to(weight.dtype)
    else:
        losses = F.cross_entropy(logits.float(), safe, reduction="none")[valid]
        keep = torch.zeros_like(losses)
        keep[losses.argsort(descending=True)[:batch_kept]] = 1.0
        weight[valid] = keep.to(weight.dtype)
    return weight


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, thresh: float | None = 0.7,
                       min_kept: int = 100000, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy over the pixels :func:`ohem_mask` keeps, averaged over all B·H·W pixels (mmseg semantics).

    Args:
        logits: (B, C, h, w) raw scores; resized to the label size if needed.
        target: (B, H, W) integer labels with ``ignore_index`` for unlabelled pixels.
        thresh: keep pixels whose true-class probability is below this (0.7 in DSQNet's configs).
        min_kept: keep at least this many pixels **per image** (100000 in DSQNet's configs).
    """
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    weight = ohem_mask(logits, target, thresh, min_kept, ignore_index)
    loss = F.cross_entropy(logits, target.long(), reduction="none", ignore_index=ignore_index)
    return (loss * weight).mean()
