"""Prediction outputs: binary change maps (PNG 0/255) and error overlays; for segmentation models class maps
(palette PNGs: the class per pixel in the dataset's label encoding, shown in its colours) and their error overlays.
A dataset whose stored labels are ``class + 1`` (``reduce-zero``: LoveDA, ISPRS in mmseg's layout) gets maps in
that encoding, as mmseg's ``format_only`` writes them (the LoveDA test server's format); 0 is never predicted.

Overlay colours (the legend in docs/training.md): true positive white, true negative black, false positive
red, false negative green, ignored pixels grey (128, 128, 128). Segmentation overlays: correct pixels in their
class colour, wrong ones magenta (255, 0, 255), ignored grey. Every file is written to a temporary name
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

__all__ = ["OVERLAY_COLOURS", "error_overlay", "class_overlay", "write_png", "write_change_map", "PredictionWriter"]

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


def class_overlay(pred: Any, label: Any, palette: Sequence[Sequence[int]], ignore_index: int = 255) -> np.ndarray:
    """(H, W, 3) uint8: correct pixels in their class colour, wrong ones magenta, ignored ones grey."""
    p, lab = _np(pred).astype(np.int64), _np(label).astype(np.int64)
    colours = np.asarray(palette, dtype=np.uint8)
    out = colours[np.clip(p, 0, len(colours) - 1)]
    out[(p != lab)] = (255, 0, 255)
    out[lab == ignore_index] = OVERLAY_COLOURS["ignore"]
    return out


def write_change_map(path: str | Path, pred: Any) -> Path:
    """Binary change map: 255 where the predicted class is > 0 (changed), 0 elsewhere."""
    return write_png(path, np.where(_np(pred) > 0, 255, 0).astype(np.uint8))


class PredictionWriter(BasePredictionWriter):
    """Writes ``<out_dir>/maps/<name>.png`` and, when the batch has labels, ``<out_dir>/overlays/<name>.png``.

    Under DDP every process writes the samples it predicted (the prediction sampler does not duplicate any).
    """

    def __init__(self, out_dir: str | Path, ignore_index: int = 255, overlays: bool = True,
                 palette: Sequence[Sequence[int]] | None = None, value_offset: int = 0) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = Path(out_dir)
        self.ignore_index = ignore_index
        self.overlays = overlays
        self.palette = palette  # a segmentation model's class colours: class maps instead of change maps
        self.value_offset = value_offset  # stored value of class 0 in the maps (1 for reduce-zero datasets)
        self.written: list[Path] = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        write_prediction(prediction, self.out_dir, self.ignore_index, self.overlays, self.written, self.palette,
                         self.value_offset)


def write_prediction(
    prediction: dict[str, Any], out_dir: str | Path, ignore_index: int = 255, overlays: bool = True,
    written: list | None = None, palette: Sequence[Sequence[int]] | None = None, value_offset: int = 0,
) -> list[Path]:
    """Write the maps (and overlays) of one ``predict_step`` output; returns the paths written. With ``palette``
    (segmentation): class maps as palette PNGs (class ``k`` stored as ``k + value_offset``) and class overlays."""
    out_dir = Path(out_dir)
    paths: list[Path] = []
    names: Sequence[str] = prediction["name"]
    label = prediction.get("label")
    for i, name in enumerate(names):
        stem = Path(str(name)).stem
        pred = prediction["pred"][i]
        if palette is None:
            paths.append(write_change_map(out_dir / "maps" / f"{stem}.png", pred))
        else:
            stored = (_np(pred).astype(np.int64) + value_offset).astype(np.uint8)
            colours = [[0, 0, 0]] * value_offset + [list(c) for c in palette]  # stored 0 (ignore): black
            paths.append(write_png(out_dir / "maps" / f"{stem}.png", stored, palette=colours))
        if overlays and label is not None:
            overlay = (error_overlay(pred, label[i], ignore_index) if palette is None else
                       class_overlay(pred, label[i], palette, ignore_index))
            paths.append(write_png(out_dir / "overlays" / f"{stem}.png", overlay))
    if written is not None:
        written.extend(paths)
    return paths
