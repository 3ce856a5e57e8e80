"""``ChangekitModel``: the forward contract every registered model keeps, as a type.

A family defines ``forward_decoder(*images, **inputs)`` (logits at the decoder's own resolution); the base owns
``forward``, which checks the number of images and returns logits (B, num_classes, H, W) at the input's
resolution (bilinear, as mmseg resizes). The class says what the model is: its ``task`` (``change``, or
``segmentation`` for a single-date model), its number of dates (``num_dates``), the further inputs it takes
besides the images (``text_inputs``: a language model's class lists), ``num_classes`` and ``in_channels`` (bands
per date).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ChangekitModel", "resize_to", "text_inputs"]


def resize_to(logits: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """``logits`` resized (bilinear, corners not aligned) to ``size``; unchanged when already that size."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


class ChangekitModel(nn.Module):
    """Base of every registered model. Subclasses call ``super().__init__(num_classes, in_channels)`` and define
    :meth:`forward_decoder`; a single-date model sets ``task = "segmentation"`` and ``num_dates = 1``."""

    task: str = "change"
    num_dates: int = 2
    #: keyword inputs of ``forward`` besides the images (CLIPFormer: ``classes_a``, ``classes_b``)
    text_inputs: tuple[str, ...] = ()
    #: reduced precisions a test validates against fp32 for this family (argmax agreement), which
    #: ``optimize_for_inference(model, "auto")`` may choose; none: ``auto`` runs fp32
    fast_precisions: tuple[str, ...] = ()
    #: whether this family's convolutions run faster on channels-last (NHWC) maps, measured on CPU by
    #: ``benchmarks/channels_last.py``; ``optimize_for_inference`` then converts its weights and images to NHWC
    inference_channels_last: bool = False

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels

    def fuse_for_inference(self) -> int:
        """Rewrite the eval-mode model into an equivalent faster one (e.g. batch norms folded into the convolutions
        before them), in place; ``optimize_for_inference`` calls it. Returns the number of layers removed; the
        default rewrites nothing."""
        return 0

    def forward_decoder(self, *images: torch.Tensor, **inputs: Any) -> torch.Tensor:
        """Logits at the decoder's resolution."""
        raise NotImplementedError

    def forward(self, *args: Any, **inputs: Any) -> torch.Tensor:
        """Logits (B, num_classes, H, W) of ``num_dates`` normalised (B, C, H, W) images, at their resolution; the
        ``text_inputs`` follow the images, by name or in their order."""
        images, extra = args[:self.num_dates], args[self.num_dates:]
        if len(images) != self.num_dates or len(extra) > len(self.text_inputs):
            what = "one image" if self.num_dates == 1 else f"{self.num_dates} dates"
            names = f" (then {', '.join(self.text_inputs)})" if self.text_inputs else ""
            raise TypeError(f"{type(self).__name__} takes {what}{names}, got {len(args)} positional argument(s)")
        inputs.update(zip(self.text_inputs, extra))
        return resize_to(self.forward_decoder(*images, **inputs), images[0].shape[-2:])


def text_inputs(model: Any) -> tuple[str, ...]:
    """The class-list inputs a model takes: a changekit model's ``text_inputs``; for any other module (an exported
    graph's runner, a user's ``nn.Module``) those its ``forward`` names."""
    own = getattr(model, "text_inputs", None)
    if own is not None:
        return tuple(own)
    params = inspect.signature(getattr(model, "forward", model)).parameters
    return tuple(k for k in ("classes_a", "classes_b") if k in params)
