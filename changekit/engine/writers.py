"""Prediction outputs: binary change maps (PNG 0/255) and error overlays.

Overlay colours (the legend in docs/training.md): true positive white, true negative black, false positive
red, false negative green, ignored pixels grey (128, 128, 128). Every file is written to a temporary name
and renamed, so an interrupted run never leaves a half-written PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from changekit.data.io import write_png

__all__ = ["OVERLAY_COLOURS", "error_overlay", "write_png", "write_change_map", "PredictionWriter"]

OVERLAY_COLOURS = {
    "tp": (255, 255, 255),  # changed, predicted changed
    "tn": (0, 0, 0),  # unchanged, predicted unchanged
    "fp": (255, 0, 0),  # unchanged, predicted changed
    "fn": (0, 255, 0),  # changed, predicted unchanged
    "ignore": (128, 128, 128),
}


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def error_overlay(pred: Any, label: Any, ignore_index: int = 255) -> np.ndarray:
    """(H, W, 3) uint8 image colouring each pixel by its outcome (see :data:`OVERLAY_COLOURS`)."""
    p, lab = _np(pred).astype(np.int64) > 0, _np(label).astype(np.int64)
    valid = lab != ignore_index
    t = lab > 0
    out = np.zeros((*p.shape, 3), dtype=np.uint8)
    for key, mask in (("tp", p & t), ("tn", ~p & ~t), ("fp", p & ~t), ("fn", ~p & t)):
        out[mask & valid] = OVERLAY_COLOURS[key]
    out[~valid] = OVERLAY_COLOURS["ignore"]
    return out


def write_change_map(path: str | Path, pred: Any) -> Path:
    """Binary change map: 255 where the predicted class is > 0 (changed), 0 elsewhere."""
    return write_png(path, np.where(_np(pred) > 0, 255, 0).astype(np.uint8))


class PredictionWriter(BasePredictionWriter):
    """Writes ``<out_dir>/maps/<name>.png`` and, when the batch has labels, ``<out_dir>/overlays/<name>.png``.

    Under DDP every process writes the samples it predicted (the prediction sampler does not duplicate any).
    """

    def __init__(self, out_dir: str | Path, ignore_index: int = 255, overlays: bool = True) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = Path(out_dir)
        self.ignore_index = ignore_index
        self.overlays = overlays
        self.written: list[Path] = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        write_prediction(prediction, self.out_dir, self.ignore_index, self.overlays, self.written)


def write_prediction(
    prediction: dict[str, Any], out_dir: str | Path, ignore_index: int = 255, overlays: bool = True, written: list | None = None
) -> list[Path]:
    """Write the maps (and overlays) of one ``predict_step`` output; returns the paths written."""
    out_dir = Path(out_dir)
    paths: list[Path] = []
    names: Sequence[str] = prediction["name"]
    label = prediction.get("label")
    for i, name in enumerate(names):
        stem = Path(str(name)).stem
        paths.append(write_change_map(out_dir / "maps" / f"{stem}.png", prediction["pred"][i]))
        if overlays and label is not None:
            paths.append(write_png(out_dir / "overlays" / f"{stem}.png", error_overlay(prediction["pred"][i], label[i], ignore_index)))
    if written is not None:
        written.extend(paths)
    return paths
