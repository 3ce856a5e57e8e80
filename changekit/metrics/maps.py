"""Scoring saved change maps against label maps (``changekit score``), matched by file name (stem).

Predictions: 0/255 or 0/1. Labels: 0/255 (255 = change) or 0/1 with the ignore value; ``"auto"`` reads a
label map as 0/1 + ignore when it contains a 1, else as 0/255.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from changekit.errors import DataError
from changekit.metrics.binary import confusion_matrix, metrics_from_confusion

__all__ = ["score_maps", "LABEL_ENCODINGS"]

LABEL_ENCODINGS = ("auto", "binary255", "index")
MAP_SUFFIXES = {".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg"}


def _read_map(path: Path) -> np.ndarray:
    from changekit.data.io import read_image

    arr = read_image(path)
    if arr.ndim == 3:
        if arr.shape[2] != 1:
            raise DataError(f"{path}: a change map must have one band, found {arr.shape[2]}")
        arr = arr[..., 0]
    return arr


def _list_maps(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{what} folder not found: {folder}")
    maps: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in MAP_SUFFIXES:
            if p.stem in maps:
                raise DataError(f"{what} folder {folder} has two maps named {p.stem!r}: {maps[p.stem].name} and {p.name}")
            maps[p.stem] = p
    if not maps:
        raise DataError(f"{what} folder {folder} holds no PNG/TIFF maps")
    return maps


def _to_classes(arr: np.ndarray, path: Path, ignore: int, is_label: bool, encoding: str) -> np.ndarray:
    """0/255 or 0/1 maps to 0/1; labels keep the ignore value. See ``changekit score -h`` for the rule."""
    values = set(np.unique(arr).tolist())
    if not is_label:
        if values <= {0, 1}:
            return arr.astype(np.int64)
        if values <= {0, 255}:
            return (arr == 255).astype(np.int64)
        raise DataError(f"{path}: prediction values {sorted(values)} are not 0/1 or 0/255")
    if encoding == "auto":
        encoding = "index" if 1 in values else "binary255"
    if encoding == "binary255":
        if not values <= {0, 255}:
            raise DataError(f"{path}: label values {sorted(values)} are not 0/255 (use --label-encoding index for 0/1 labels)")
        return (arr == 255).astype(np.int64)
    if not values <= {0, 1, ignore}:
        raise DataError(f"{path}: label values {sorted(values)} are not 0/1 or the ignore value {ignore}")
    return arr.astype(np.int64)



def score_maps(pred_dir: str | Path, label_dir: str | Path, ignore: int = 255, label_encoding: str = "auto") -> dict:
    """Metrics (:func:`~changekit.metrics.binary.metrics_from_confusion`) of every prediction map against its
    label, accumulated over the folder; plus ``pairs``, the number of maps scored."""
    pred_dir, label_dir = Path(pred_dir), Path(label_dir)
    if label_encoding not in LABEL_ENCODINGS:
        raise DataError(f"label encoding {label_encoding!r}: use one of {', '.join(LABEL_ENCODINGS)}")
    preds = _list_maps(pred_dir, "prediction")
    labels = _list_maps(label_dir, "label")
    missing = sorted(labels.keys() - preds.keys())
    extra = sorted(preds.keys() - labels.keys())
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no prediction for {len(missing)} label(s) in {label_dir}: {', '.join(missing[:5])}")
        if extra:
            parts.append(f"no label for {len(extra)} prediction(s) in {pred_dir}: {', '.join(extra[:5])}")
        raise DataError("; ".join(parts) + ". Predictions and labels are matched by file name without extension.")

    mat = torch.zeros(2, 2, dtype=torch.long)
    for stem, label_path in labels.items():
        label = _to_classes(_read_map(label_path), label_path, ignore, True, label_encoding)
        pred = _to_classes(_read_map(preds[stem]), preds[stem], ignore, False, label_encoding)
        if pred.shape != label.shape:
            raise DataError(f"{preds[stem]}: size {pred.shape[::-1]} differs from its label {label_path} {label.shape[::-1]}")
        mat += confusion_matrix(torch.from_numpy(pred), torch.from_numpy(label), 2, ignore)
    return {**metrics_from_confusion(mat), "pairs": len(labels)}
