"""Whole-image and sliding-window inference (mmseg ``whole_inference`` / ``slide_inference``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
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


def _run(model: Callable[..., torch.Tensor], images: Sequence[torch.Tensor], **inputs: Any) -> torch.Tensor:
    logits = model(*images, **inputs)
    if logits.shape[-2:] != images[0].shape[-2:]:
        logits = F.interpolate(logits, size=images[0].shape[-2:], mode="bilinear", align_corners=False)
    return logits


def _fit_size(h: int, w: int, resize) -> tuple[int, int]:
    """mmseg's ``Resize(scale, keep_ratio=True)``: the size that fits ``resize`` keeping the aspect ratio."""
    rh, rw = _pair(resize, "resize")
    f = min(max(rh, rw) / max(h, w), min(rh, rw) / min(h, w))
    return int(h * f + 0.5), int(w * f + 0.5)


def predict_logits(
    model: Callable[..., torch.Tensor],
    images: Sequence[torch.Tensor],
    mode: str = "whole",
    window: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    resize: int | Sequence[int] | None = None,
    labeller: Callable[..., tuple[list, list]] | None = None,
    **inputs: Any,
) -> torch.Tensor:
    """Logits (B, K, H, W) of ``model(*images, **inputs)`` for a batch: ``images`` are the dates of each sample
    (two for a change model, one for a segmentation model), on one grid.

    ``inputs`` are further per-sample model inputs passed through unchanged (CLIPFormer's ``classes_a`` /
    ``classes_b``); every window of an image sees its image's values.

    ``resize=(h, w)``: first rescale the images, keeping their aspect ratio, to fit ``(h, w)`` as mmseg's
    ``Resize(scale, keep_ratio=True)`` (a no-op when they already fit exactly), and resize the logits back.

    ``mode='whole'`` runs the model once on the full images. ``mode='slide'`` runs it on windows of size
    ``window`` placed every ``stride`` pixels (see :func:`slide_windows`) and averages the overlapping
    logits with a count matrix, as open-cd's ``test_cfg=dict(mode='slide', crop_size=..., stride=...)``.
    ``mode='mm_slide'`` (CLIPFormer's released test mode) is ``slide`` with class lists computed for every window
    by ``labeller(*windows, where)`` (a :class:`~changekit.models.text.zero_shot.WindowLabeller`), which
    replace ``classes_a`` / ``classes_b`` for that window.
    """
    images = list(images)
    h, w = images[0].shape[-2:]
    if resize is not None and (size := _fit_size(h, w, resize)) != (h, w):
        scaled = [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in images]
        out = predict_logits(model, scaled, mode, window, stride, labeller=labeller, **inputs)
        return F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
    if mode == "whole":
        return _run(model, images, **inputs)
    if mode not in ("slide", "mm_slide"):
        raise ConfigError(f"evaluation mode must be 'whole', 'slide' or 'mm_slide', got {mode!r}")
    if mode == "mm_slide" and labeller is None:
        raise ConfigError("evaluation mode 'mm_slide' labels every window with CLIP: set model.eval.clip_weights")
    window, stride = _pair(window, "window"), _pair(stride, "stride")
    b = images[0].shape[0]
    preds: torch.Tensor | None = None
    count = images[0].new_zeros((1, 1, h, w))
    for y1, y2, x1, x2 in slide_windows(h, w, window, stride):
        crops = [x[:, :, y1:y2, x1:x2] for x in images]
        if mode == "mm_slide":
            classes_a, classes_b = labeller(*crops, (y1, y2, x1, x2))
            out = _run(model, crops, **{**inputs, "classes_a": classes_a, "classes_b": classes_b})
        else:
            out = _run(model, crops, **inputs)
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
