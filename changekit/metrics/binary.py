"""Change-detection metrics under one explicit protocol.

Definitions are those of open-cd (mmseg ``IoUMetric``): pixels whose label equals the ignore value are
dropped; per class, the intersection, predicted and labelled areas are **summed over the whole
evaluation set** (a confusion matrix accumulated over every image, never an average of per-batch
scores); then, per class c,

* IoU = I / (P + L − I), precision = I / P, recall = I / L, F1 = 2·precision·recall / (precision + recall),

with I = pixels labelled c and predicted c, P = pixels predicted c, L = pixels labelled c. Overall accuracy
OA = Σ_c I_c / N, Cohen's kappa = (OA − p_e) / (1 − p_e) with p_e = Σ_c P_c·L_c / N², mIoU and mF1 are the
means over classes (NaN classes, i.e. absent from both labels and predictions, are left out as mmseg does).
Published open-cd/BAN numbers are the per-class values of the *change* class (class 1), which is what the
top-level ``precision``, ``recall``, ``f1`` and ``iou`` keys report.

:class:`ConfusionMatrix` is a torchmetrics ``Metric``: under DDP its counts are summed across processes,
so the metrics of N processes equal those of one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from changekit.errors import DataError

__all__ = ["ConfusionMatrix", "confusion_matrix", "metrics_from_confusion", "format_metrics_table", "json_ready",
           "SUMMARY_KEYS", "format_percent"]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = 255) -> torch.Tensor:
    """Confusion counts ``mat[label, prediction]`` (int64, num_classes × num_classes) for one batch.

    ``pred`` holds class indices with the shape of ``target``, or logits/scores with one more (class)
    dimension at position 1.
    """
    if pred.dim() == target.dim() + 1:
        pred = pred.argmax(dim=1)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} does not match label shape {tuple(target.shape)}")
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        bad = sorted(set(torch.unique(target).tolist()) - set(range(num_classes)))
        raise DataError(f"label values {bad} are outside 0..{num_classes - 1} and not the ignore value {ignore_index}")
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise DataError(f"prediction values outside 0..{num_classes - 1}")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


class ConfusionMatrix(Metric):
    """Accumulates confusion counts over a whole evaluation set (summed across DDP processes)."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, num_classes: int = 2, ignore_index: int | None = 255, change_class: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.change_class = change_class
        self.add_state("mat", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.mat += confusion_matrix(pred.detach(), target.detach(), self.num_classes, self.ignore_index).to(self.mat.device)

    def compute(self) -> dict[str, Any]:
        return metrics_from_confusion(self.mat, self.change_class)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def _mean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def metrics_from_confusion(mat: torch.Tensor | np.ndarray, change_class: int = 1) -> dict[str, Any]:
    """All metrics (fractions in [0, 1]; NaN where undefined) from a ``mat[label, prediction]`` matrix."""
    m = np.asarray(mat.cpu() if isinstance(mat, torch.Tensor) else mat, dtype=np.float64)
    inter = np.diag(m)
    area_label = m.sum(axis=1)
    area_pred = m.sum(axis=0)
    total = m.sum()
    iou = _div(inter, area_label + area_pred - inter)
    precision = _div(inter, area_pred)
    recall = _div(inter, area_label)
    f1 = _div(2 * precision * recall, precision + recall)
    f1 = np.where((precision == 0) & (recall == 0), 0.0, f1)
    oa = float(inter.sum() / total) if total else math.nan
    pe = float((area_pred * area_label).sum() / total**2) if total else math.nan
    kappa = (oa - pe) / (1 - pe) if total and pe != 1 else math.nan
    c = change_class
    return {
        "precision": float(precision[c]),
        "recall": float(recall[c]),
        "f1": float(f1[c]),
        "iou": float(iou[c]),
        "oa": oa,
        "kappa": float(kappa),
        "miou": _mean(iou),
        "mf1": _mean(f1),
        "per_class": {
            "iou": iou.tolist(),
            "f1": f1.tolist(),
            "precision": precision.tolist(),
            "recall": recall.tolist(),
        },
        "confusion": m.astype(np.int64).tolist(),
        "pixels": int(total),
    }


def format_percent(v: float) -> str:
    return "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:6.2f}"


def format_metrics_table(metrics: dict[str, Any], mode: str | None = None, class_names: list[str] | None = None) -> str:
    """A plain-text table of the per-class and summary metrics (in %), headed by the evaluation mode."""
    pc = metrics["per_class"]
    n = len(pc["iou"])
    names = class_names or (["unchanged", "changed"] if n == 2 else [f"class {i}" for i in range(n)])
    lines = []
    if mode:
        lines.append(f"evaluation: {mode}")
    width = max(9, *map(len, names))
    lines.append(f"{'class':<{width}} | {'IoU':>6} | {'F1':>6} | {'Prec':>6} | {'Recall':>6}")
    lines.append("-" * (width + 37))
    for i, name in enumerate(names):
        lines.append(
            f"{name:<{width}} | {format_percent(pc['iou'][i])} | {format_percent(pc['f1'][i])} | {format_percent(pc['precision'][i])} | {format_percent(pc['recall'][i])}"
        )
    lines.append("-" * (width + 37))
    if "f1" in metrics:  # change models: the change class's figures (segmentation tables have none)
        lines.append(
        f"change class: F1 {format_percent(metrics['f1']).strip()}  IoU {format_percent(metrics['iou']).strip()}  "
        f"P {format_percent(metrics['precision']).strip()}  R {format_percent(metrics['recall']).strip()}"
        )
    lines.append(
        f"OA {format_percent(metrics['oa']).strip()}  kappa {format_percent(metrics['kappa']).strip()}  "
        f"mIoU {format_percent(metrics['miou']).strip()}  mF1 {format_percent(metrics['mf1']).strip()}  ({metrics['pixels']} pixels)"
    )
    return "\n".join(lines)


SUMMARY_KEYS = ("precision", "recall", "f1", "iou", "oa", "kappa", "miou", "mf1")


def json_ready(metrics: dict[str, Any]) -> dict[str, Any]:
    """Replace NaN by None recursively so the result is valid JSON."""
    if isinstance(metrics, dict):
        return {k: json_ready(v) for k, v in metrics.items()}
    if isinstance(metrics, list):
        return [json_ready(v) for v in metrics]
    if isinstance(metrics, float) and math.isnan(metrics):
        return None
    return metrics
