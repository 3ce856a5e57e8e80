"""``SemanticChangeTask``: train and evaluate a semantic-change model (BAN-SCD on BANDON).

The model must offer ``forward_scd(t1, t2) -> dict(change, sem1, sem2)`` (logits at input resolution); its
plain ``forward`` gives the change logits, so prediction, export and every generic tool treat it as an ordinary
change model. The batches must carry ``label_sem1`` / ``label_sem2`` besides ``label``: for BANDON set
``data.dataset_args: {semantic: true}``.

Loss (as the BAN repository's ``SCD_BitemporalAdapterHead.loss_by_feat``): ``loss`` (default CE) on the change
logits + ``semantic_loss`` (default CE, weight 1) on each date's semantic logits, ignore value 255, logits
resized to the label size. Validation/test log the SCD metrics of :mod:`changekit.metrics.scd` (``val/sek``,
``val/scd_score``, ``val/sem_miou``, and the binary ``val/f1``, ``val/iou``, ``val/miou`` ...), with the same
whole/slide evaluation as the change task applied to all three outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from changekit.engine.losses import ChangeLoss
from changekit.engine.task import Task
from changekit.errors import ConfigError
from changekit.metrics.scd import SCD_SUMMARY_KEYS, SCDConfusion, format_scd_table

__all__ = ["SemanticChangeTask"]


class SemanticChangeTask(Task):
    """:class:`~changekit.engine.task.Task` for semantic change: the change logits and each date's semantic logits,
    their summed loss and the SCD metrics.

    Extra args:
        num_semantic_classes: classes of each date's semantic map (BANDON: 3, background / roof / facade).
        semantic_loss: loss of each semantic map, as ``loss`` (default ``{ce: 1.0}``).
    """

    TASK_NAME = "semantic-change"
    MONITOR = "val/f1"
    IMAGE_KEYS = ("t1", "t2")
    SUMMARY_KEYS = SCD_SUMMARY_KEYS

    def __init__(self, *args: Any, num_semantic_classes: int = 3, semantic_loss: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        self._num_semantic = num_semantic_classes  # the metrics the base builds need it
        super().__init__(*args, **kwargs)  # arch, arch_args, loss, ... exactly as the other tasks
        arch = self.hparams.arch
        self.save_hyperparameters()
        if not hasattr(self.model, "forward_scd"):
            raise ConfigError(f"model {arch!r} has no semantic heads (forward_scd); use a ban-scd_* model "
                              "or the plain ChangeDetectionTask")
        own = getattr(self.model, "num_semantic_classes", num_semantic_classes)
        if own != num_semantic_classes:
            raise ConfigError(f"model {arch!r} predicts {own} semantic classes but num_semantic_classes is "
                              f"{num_semantic_classes}")
        self.semantic_criterion = ChangeLoss(semantic_loss or {"ce": 1.0}, ignore_index=self.hparams.ignore_index)

    def new_metric(self) -> SCDConfusion:
        return SCDConfusion(self._num_semantic, ignore_index=self.hparams.ignore_index)

    def metrics_table(self, metrics: dict[str, Any]) -> str:
        return format_scd_table(metrics, self.eval_mode_description)

    @staticmethod
    def _labels(batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        missing = [k for k in ("label", "label_sem1", "label_sem2") if k not in batch]
        if missing:
            raise ConfigError(f"the batches lack {missing}: semantic change needs both dates' semantic labels "
                              "(BANDON: set data.dataset_args: {semantic: true})")
        return batch["label"], batch["label_sem1"], batch["label_sem2"]

    def scd_losses(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict]:
        label, s1, s2 = self._labels(batch)
        change, _ = self.criterion(out["change"], label)
        sem1, _ = self.semantic_criterion(out["sem1"], s1)
        sem2, _ = self.semantic_criterion(out["sem2"], s2)
        return change + sem1 + sem2, {"change": change, "sem1": sem1, "sem2": sem2}

    def training_loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.scd_losses(self.model.forward_scd(batch["t1"], batch["t2"]), batch)

    def _stacked(self, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        """The three outputs as one logits tensor (change, sem1, sem2 on the class axis), so that the whole/slide
        evaluation (window averaging included) serves them unchanged."""
        out = self.model.forward_scd(t1, t2)
        return torch.cat([out["change"], out["sem1"], out["sem2"]], dim=1)

    def predict_scd(self, t1: torch.Tensor, t2: torch.Tensor) -> dict[str, torch.Tensor]:
        """``dict(change, sem1, sem2)`` logits with the configured whole/slide evaluation."""
        out = self.sliding(self._stacked, [t1, t2])
        k = self.model.num_semantic_classes
        change, sem1, sem2 = torch.split(out, [out.shape[1] - 2 * k, k, k], dim=1)
        return {"change": change, "sem1": sem1, "sem2": sem2}

    def evaluate(self, batch: Mapping[str, Any], metric) -> torch.Tensor:
        label, s1, s2 = self._labels(batch)
        out = self.predict_scd(batch["t1"], batch["t2"])
        if out["change"].shape[-2:] != label.shape[-2:]:
            out = {k: F.interpolate(v, size=label.shape[-2:], mode="bilinear", align_corners=False) for k, v in out.items()}
        loss, _ = self.scd_losses(out, batch)
        metric.update(out["change"].argmax(1), label, out["sem1"].argmax(1), s1, out["sem2"].argmax(1), s2)
        return loss
