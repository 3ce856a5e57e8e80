"""Whole-image and sliding-window inference (mmseg ``whole_inference`` / ``slide_inference``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from changekit.errors import ConfigError

__all__ = ["predict_logits", "slide_windows", "describe_eval_mode"]


def _pair(v: int | Sequence[int] | None, name: str) -> tuple[int, int]:
    if v is None:
        raise ConfigError(f"slide inference needs '{name}' (e.g. {name}: [512, 512])")
    if isinstance(v, int):
        return v, v
    v = tuple(int(x) for x in v)
    if len(v) != 2 or min(v) <= 0:
        raise ConfigError(f"'{name}' must be a positive int or [h, w], got {v}")
    return v  # type: ignore[return-value]


def slide_windows(h: int, w: int, window: tuple[int, int], stride: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Windows ``(y1, y2, x1, x2)`` exactly as mmseg's ``slide_inference`` places them.

    ``h_grids = max(H - wh + sh - 1, 0) // sh + 1``; each window starts at ``i * stride``, the last one is
    clamped to the image border; an image smaller than the window is covered by one window (the whole image).
    """
    (wh, ww), (sh, sw) = window, stride
    h_grids = max(h - wh + sh - 1, 0) // sh + 1
    w_grids = max(w - ww + sw - 1, 0) // sw + 1
    out = []
    for hi in range(h_grids):
        for wi in range(w_grids):
            y1, x1 = hi * sh, wi * sw
            y2, x2 = min(y1 + wh, h), min(x1 + ww, w)
            y1, x1 = max(y2 - wh, 0), max(x2 - ww, 0)
            out.append((y1, y2, x1, x2))
    return out


def _run(model: nn.Module, t1: torch.Tensor, t2: torch.Tensor, **inputs: Any) -> torch.Tensor:
    logits = model(t1, t2, **inputs)
    if logits.shape[-2:] != t1.shape[-2:]:
        logits = F.interpolate(logits, size=t1.shape[-2:], mode="bilinear", align_corners=False)
    return logits


def predict_logits(
    model: nn.Module,
    t1: torch.Tensor,
    t2: torch.Tensor,
    mode: str = "whole",
    window: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    resize: int | Sequence[int] | None = None,
    labeller: Callable[..., tuple[list, list]] | None = None,
    **inputs: Any,
) -> torch.Tensor:
    """Logits (B, K, H, W) for a batch of image pairs.

    ``inputs`` are further per-sample model inputs passed through unchanged (CLIPFormer's ``classes_a`` /
    ``classes_b``); every window of an image sees its image's values.

    ``resize=(h, w)``: first rescale the images, keeping their aspect ratio, to fit ``(h, w)`` as mmseg's
    ``Resize(scale, keep_ratio=True)`` (a no-op when they already fit exactly), and resize the logits back.

    ``mode='whole'`` runs the model once on the full images. ``mode='slide'`` runs it on windows of size
    ``window`` placed every ``stride`` pixels (see :func:`slide_windows`) and averages the overlapping
    logits with a count matrix, as open-cd's ``test_cfg=dict(mode='slide', crop_size=..., stride=...)``.
    ``mode='mm_slide'`` (CLIPFormer's released test mode) is ``slide`` with class lists computed for every window
    by ``labeller(t1_window, t2_window, where)`` (a :class:`~changekit.models.text.zero_shot.WindowLabeller`), which
    replace ``classes_a`` / ``classes_b`` for that window.
    """
    if resize is not None:  # mmseg Resize(scale, keep_ratio=True) before, logits resized back after
        h, w = t1.shape[-2:]
        (rh, rw) = _pair(resize, "resize")
        f = min(max(rh, rw) / max(h, w), min(rh, rw) / min(h, w))
        size = (int(h * f + 0.5), int(w * f + 0.5))
        if size != (h, w):
            t1r = F.interpolate(t1, size=size, mode="bilinear", align_corners=False)
            t2r = F.interpolate(t2, size=size, mode="bilinear", align_corners=False)
            out = predict_logits(model, t1r, t2r, mode, window, stride, labeller=labeller, **inputs)
            return F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
    if mode == "whole":
        return _run(model, t1, t2, **inputs)
    if mode not in ("slide", "mm_slide"):
        raise ConfigError(f"evaluation mode must be 'whole', 'slide' or 'mm_slide', got {mode!r}")
    if mode == "mm_slide" and labeller is None:
        raise ConfigError("evaluation mode 'mm_slide' labels every window with CLIP: set model.eval.clip_weights")
    window, stride = _pair(window, "window"), _pair(stride, "stride")
    b, _, h, w = t1.shape
    preds: torch.Tensor | None = None
    count = t1.new_zeros((1, 1, h, w))
    for y1, y2, x1, x2 in slide_windows(h, w, window, stride):
        w1, w2 = t1[:, :, y1:y2, x1:x2], t2[:, :, y1:y2, x1:x2]
        if mode == "mm_slide":
            classes_a, classes_b = labeller(w1, w2, (y1, y2, x1, x2))
            out = _run(model, w1, w2, **{**inputs, "classes_a": classes_a, "classes_b": classes_b})
        else:
            out = _run(model, w1, w2, **inputs)
        if preds is None:
            preds = out.new_zeros((b, out.shape[1], h, w))
        preds[:, :, y1:y2, x1:x2] += out
        count[:, :, y1:y2, x1:x2] += 1
    assert preds is not None
    return preds / count.to(preds.dtype)


def describe_eval_mode(mode: str = "whole", window=None, stride=None, resize=None) -> str:
    """Human-readable evaluation mode, printed with every result table."""
    pre = ""
    if resize is not None:
        rh, rw = _pair(resize, "resize")
        pre = f"resized to fit {rh}x{rw} (keep ratio), "
    if mode in ("slide", "mm_slide"):
        (wh, ww), (sh, sw) = _pair(window, "window"), _pair(stride, "stride")
        labels = ", CLIP class lists per window" if mode == "mm_slide" else ""
        return f"{mode} ({pre}window {wh}x{ww}, stride {sh}x{sw}{labels}, logits averaged)"
    return f"whole ({pre}full image, one pass)"
