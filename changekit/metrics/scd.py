"""Semantic change detection (SCD) metrics, as open-cd's ``SCDMetric(cal_sek=True)`` (the BAN BANDON configs).

Three maps are scored per image pair: the binary change map and the semantic map of each date
(BANDON: 0 background, 1 roof, 2 facade). Pixels labelled with the ignore value (255) are dropped.

* **Binary**: the usual confusion metrics of the change map (:func:`changekit.metrics.binary.metrics_from_confusion`):
  change-class precision / recall / F1 / IoU (the published numbers) and the two-class means (mIoU, mF1).
* **Semantic**: one K×K confusion ``S[label, prediction]`` accumulated over **both dates together** over the
  whole set; semantic mIoU / mF1 / OA are its per-class means as for the binary map.
* **SeK** (separated kappa): from S, the (0, 0) count (class 0 labelled and predicted, ``h00``) is removed from
  the intersection, predicted and labelled areas of class 0. With I_c, P_c, L_c the resulting areas,
  N = Σ L_c (= Σ P_c):

  - po = Σ I_c / N, pe = Σ P_c·L_c / N², kappa0 = (po − pe) / (1 − pe);
  - IoU_fg = (Σ_{c≥1} L_c − P_0) / N;
  - SeK = kappa0 · exp(IoU_fg) / e.

* **SCD score** = 0.3 · binary mIoU + 0.7 · SeK. open-cd takes the binary ``IoU`` entry of its summary, which is
  the **mean over both classes** (unchanged and changed), not the change-class IoU; we do the same.

All values are fractions in [0, 1] (open-cd prints them ×100, rounded to 2 decimals); NaN where undefined.
:class:`SCDConfusion` is a torchmetrics ``Metric`` whose two confusion matrices are summed across DDP
processes, so the metrics of N processes equal those of one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from changekit.metrics.binary import (
    confusion_matrix,
    format_metrics_table,
    format_percent,
    metrics_from_confusion,
)

__all__ = ["SCDConfusion", "sek_from_confusion", "scd_metrics_from_confusion", "format_scd_table"]


def sek_from_confusion(sem: torch.Tensor | np.ndarray) -> dict[str, float]:
    """``kappa0``, ``iou_fg`` and ``sek`` from a semantic confusion ``sem[label, prediction]`` (both dates summed)."""
    m = np.asarray(sem.cpu() if isinstance(sem, torch.Tensor) else sem, dtype=np.float64)
    inter = np.diag(m).copy()
    area_label = m.sum(axis=1)
    area_pred = m.sum(axis=0)
    h00 = inter[0]
    inter[0] -= h00
    area_label[0] -= h00
    area_pred[0] -= h00
    n_label, n_pred = area_label.sum(), area_pred.sum()
    if n_label <= 0 or n_pred <= 0:
        return {"kappa0": math.nan, "iou_fg": math.nan, "sek": math.nan}
    po = inter.sum() / n_label
    pe = (area_label * area_pred).sum() / n_pred**2
    kappa0 = (po - pe) / (1 - pe) if pe != 1 else math.nan
    iou_fg = (area_label[1:].sum() - area_pred[0]) / n_label
    return {"kappa0": float(kappa0), "iou_fg": float(iou_fg), "sek": float(kappa0 * math.exp(iou_fg) / math.e)}


def scd_metrics_from_confusion(binary: torch.Tensor | np.ndarray, sem: torch.Tensor | np.ndarray,
                               change_class: int = 1) -> dict[str, Any]:
    """Binary metrics (the keys of :func:`~changekit.metrics.metrics_from_confusion`) plus ``sem_miou``,
    ``sem_mf1``, ``sem_oa``, ``sem_per_class``, ``sem_confusion``, ``kappa0``, ``iou_fg``, ``sek`` and ``scd_score``."""
    out = metrics_from_confusion(binary, change_class)
    s = metrics_from_confusion(sem, change_class=0)
    out.update(sem_miou=s["miou"], sem_mf1=s["mf1"], sem_oa=s["oa"], sem_per_class=s["per_class"],
               sem_confusion=s["confusion"], sem_pixels=s["pixels"])
    out.update(sek_from_confusion(sem))
    out["scd_score"] = 0.3 * out["miou"] + 0.7 * out["sek"]
    return out


SCD_SUMMARY_KEYS = ("precision", "recall", "f1", "iou", "miou", "mf1", "oa", "sem_miou", "sem_mf1", "sem_oa", "kappa0",
                    "iou_fg", "sek", "scd_score")


class SCDConfusion(Metric):
    """Accumulates the binary change confusion (2×2) and the semantic confusion (K×K, both dates)."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, num_semantic_classes: int = 3, ignore_index: int | None = 255, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_semantic_classes = num_semantic_classes
        self.ignore_index = ignore_index
        self.add_state("binary", default=torch.zeros(2, 2, dtype=torch.long), dist_reduce_fx="sum")
        k = num_semantic_classes
        self.add_state("sem", default=torch.zeros(k, k, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, change: torch.Tensor, label: torch.Tensor, sem1: torch.Tensor, label_sem1: torch.Tensor,
               sem2: torch.Tensor, label_sem2: torch.Tensor) -> None:
        """Predictions as class indices (or logits with the class dimension at 1) and their labels."""
        ii, k = self.ignore_index, self.num_semantic_classes
        self.binary += confusion_matrix(change.detach(), label.detach(), 2, ii).to(self.binary.device)
        for p, t in ((sem1, label_sem1), (sem2, label_sem2)):
            self.sem += confusion_matrix(p.detach(), t.detach(), k, ii).to(self.sem.device)

    def compute(self) -> dict[str, Any]:
        return scd_metrics_from_confusion(self.binary, self.sem)


def format_scd_table(metrics: dict[str, Any], mode: str | None = None,
                     semantic_names: list[str] | None = None) -> str:
    """The binary table of :func:`changekit.metrics.format_metrics_table` followed by the semantic one and SeK."""

    lines = [format_metrics_table(metrics, mode), ""]
    pc = metrics["sem_per_class"]
    names = semantic_names or (["background", "roof", "facade"] if len(pc["iou"]) == 3 else
                               [f"class {i}" for i in range(len(pc["iou"]))])
    width = max(10, *map(len, names))
    lines.append(f"{'semantic':<{width}} | {'IoU':>6} | {'F1':>6} | {'Prec':>6} | {'Recall':>6}")
    lines.append("-" * (width + 37))
    for i, name in enumerate(names):
        lines.append(f"{name:<{width}} | {format_percent(pc['iou'][i])} | {format_percent(pc['f1'][i])} | "
                     f"{format_percent(pc['precision'][i])} | {format_percent(pc['recall'][i])}")
    lines.append("-" * (width + 37))
    lines.append(f"semantic mIoU {format_percent(metrics['sem_miou']).strip()}  mF1 {format_percent(metrics['sem_mf1']).strip()}  "
                 f"OA {format_percent(metrics['sem_oa']).strip()}")
    lines.append(f"SeK {format_percent(metrics['sek']).strip()}  (kappa0 {format_percent(metrics['kappa0']).strip()}, "
                 f"IoU_fg {format_percent(metrics['iou_fg']).strip()})  SCD score {format_percent(metrics['scd_score']).strip()} "
                 "(0.3 binary mIoU + 0.7 SeK)")
    return "\n".join(lines)
