"""``SceneOptions``: every setting of a scene run, checked once, shared by ``changekit scene``, ``changekit timeline``
and the Python API (:func:`changekit.run_scene`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from changekit.errors import ConfigError

__all__ = ["SceneOptions", "check_options"]


def check_options(window: int, overlap: int, batch_size: int, threshold: float | None, min_area: float,
                  simplify: float | None) -> None:
    """Every numeric option in its valid range."""
    rules = [
        (window >= 1, f"--window {window}: must be at least 1 pixel"),
        (0 <= overlap < window, f"--overlap {overlap}: must be at least 0 and smaller than --window ({window})"),
        (batch_size >= 1, f"--batch-size {batch_size}: must be at least 1"),
        (threshold is None or 0.0 <= threshold <= 1.0, f"--threshold {threshold}: a probability, between 0 and 1"),
        (min_area >= 0, f"--min-area {min_area}: must be 0 or more (CRS units squared)"),
        (simplify is None or simplify >= 0, f"--simplify {simplify}: must be 0 or more (CRS units)"),
    ]
    for ok, message in rules:
        if not ok:
            raise ConfigError(message)


@dataclass
class SceneOptions:
    """How a scene is read, run and written (the options of ``changekit scene``; docs/scenes.md).

    The model comes from ``model`` (an ``nn.Module``; give ``mean``/``std`` in training units, else 0/1), or
    ``ckpt`` (a changekit checkpoint, a shipped model's ``.safetensors`` or an exported ``.onnx``) or ``config`` +
    ``ckpt``. ``scale`` maps stored values to training units (:func:`changekit.geo.inputs.resolve_scaling`).
    ``threshold`` defaults to the model's own, else 0.5 (change models only). ``precision`` (``auto`` by default: the
    fastest precision the hardware runs natively that is validated for the model's family) and ``compile`` go
    through :func:`changekit.optimize_for_inference`. ``clip_per_window`` (CLIP weights) labels every window of a
    language model by zero-shot CLIP, keeping the top ``clip_top_k`` classes. ``stac``
    (:class:`changekit.data.stac.StacOptions`) crops STAC Items to an area and masks clouds. ``on_window(n)`` is
    called after each window (tests)."""

    ckpt: str | Path | None = None
    config: str | Path | None = None
    model: nn.Module | None = None
    mean: Sequence[float] | str | None = None
    std: Sequence[float] | str | None = None
    bands: Sequence[int] | str | None = None
    scale: str = "auto"
    input_range: Sequence[float] | None = None
    align: bool = False
    resampling: str = "bilinear"
    window: int = 512
    overlap: int = 128
    batch_size: int = 4
    device: str | torch.device = "cpu"
    threshold: float | None = None
    min_area: float = 0.0
    simplify: float | None = None
    vectors: bool = True
    cog: bool = False
    pixel_coords: bool = False
    restart: bool = False
    keep_partial: bool = False
    progress: bool = True
    pad_multiple: int = 32
    clip_per_window: str | Path | None = None
    clip_top_k: int = 9
    precision: str = "auto"
    compile: bool = False
    on_window: Callable[[int], None] | None = None
    stac: Any = None

    def __post_init__(self) -> None:
        check_options(self.window, self.overlap, self.batch_size, self.threshold, self.min_area, self.simplify)
        if self.stac is None:
            from changekit.data.stac import StacOptions

            self.stac = StacOptions()
