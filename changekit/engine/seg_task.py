"""``SegmentationTask``: train and evaluate a single-date semantic segmentation model (MCAT-UNet on ISPRS Potsdam,
Vaihingen, LoveDA) through the same engine as change detection.

The model must declare ``task = "segmentation"`` and take one image (``forward(image)`` → logits at input
resolution); batches carry ``image`` and ``label``. A model with ``forward_all(image) -> dict(seg, aux)``
(MCAT-UNet's FCN auxiliary head) also trains the auxiliary logits with weight ``aux_weight`` (0.4, as mmseg's
configs), both resized to the label size as mmseg does. Evaluation runs the shared whole/slide inference on
the image and logs the mmseg protocol over the ignore index: ``val/miou``, ``val/mf1``, ``val/oa`` (and kappa); the
best checkpoint is chosen by ``val/miou``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from changekit.engine.task import Task
from changekit.errors import ConfigError
from changekit.metrics import ConfusionMatrix, format_metrics_table

__all__ = ["SegmentationTask", "SEG_SUMMARY_KEYS"]

SEG_SUMMARY_KEYS = ("miou", "mf1", "oa", "kappa")


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return x if x.shape[-2:] == tuple(size) else F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class SegmentationTask(Task):
    """:class:`~changekit.engine.task.Task` for one-image models: ``model(image)`` -> class logits, mIoU / mF1 / OA.

    Extra args:
        aux_weight: weight of the auxiliary head's loss (models with ``forward_all``; 0 turns it off).
        class_names: names for the metrics table (default: the dataset preset's).
    """

    TASK_NAME = "segmentation"
    MONITOR = "val/miou"
    IMAGE_KEYS = ("image",)
    SUMMARY_KEYS = SEG_SUMMARY_KEYS

    def __init__(self, *args: Any, aux_weight: float = 0.4, class_names: list[str] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("num_classes", 6)
        super().__init__(*args, **kwargs)
        self.save_hyperparameters()
        if getattr(self.model, "task", "change") != "segmentation":
            raise ConfigError(f"model {self.hparams.arch!r} is a change model (two dates); task: segmentation needs "
                              "a single-date model such as mcat-unet_segnext-s")
        if self.eval_cfg["mode"] == "mm_slide":
            raise ConfigError("model.eval.mode mm_slide labels change windows with CLIP; use whole or slide")

    def new_metric(self) -> ConfusionMatrix:
        return ConfusionMatrix(num_classes=self.hparams.num_classes, ignore_index=self.hparams.ignore_index)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)

    def training_loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The main head's loss, plus ``aux_weight`` times the auxiliary head's (models with ``forward_all``)."""
        image, label = batch["image"], batch["label"]
        if hasattr(self.model, "forward_all") and self.hparams.aux_weight:
            out = self.model.forward_all(image)
            main, _ = self.criterion(_resize(out["seg"], label.shape[-2:]), label)
            parts = {"seg": main}
            if "aux" in out:
                aux, _ = self.criterion(_resize(out["aux"], label.shape[-2:]), label)
                parts["aux"] = aux
                return main + float(self.hparams.aux_weight) * aux, parts
            return main, parts
        loss, _ = self.criterion(self.model(image), label)
        return loss, {"seg": loss}

    def _class_names(self) -> list[str] | None:
        if self.hparams.class_names:
            return list(self.hparams.class_names)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        names = list(getattr(getattr(dm, "preset", None), "class_names", ()) or ())
        return names if len(names) == self.hparams.num_classes else None

    def shown_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        for k in ("precision", "recall", "f1", "iou"):  # the change-class figures mean nothing for land cover
            metrics.pop(k, None)
        return metrics

    def metrics_table(self, metrics: dict[str, Any]) -> str:
        return format_metrics_table(metrics, self.eval_mode_description, self._class_names())
