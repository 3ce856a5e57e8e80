"""``SegmentationTask``: train and evaluate a single-date semantic segmentation model (MCAT-UNet on ISPRS Potsdam,
Vaihingen, LoveDA) through the same engine as change detection.

The model must declare ``task = "segmentation"`` and take one image (``forward(image)`` → logits at input
resolution); batches carry ``t1`` (the image) and ``label``. A model with ``forward_all(image) -> dict(seg, aux)``
(MCAT-UNet's FCN auxiliary head) also trains the auxiliary logits with weight ``aux_weight`` (0.4, as mmseg's
configs), both resized to the label size as mmseg does. Evaluation runs the change task's whole/slide inference on
the image and logs the mmseg protocol over the ignore index: ``val/miou``, ``val/mf1``, ``val/oa`` (and kappa); the
best checkpoint is chosen by ``val/miou``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from changekit.engine.inference import predict_logits
from changekit.engine.task import ChangeDetectionTask
from changekit.errors import ConfigError
from changekit.metrics import format_metrics_table

__all__ = ["SegmentationTask"]

SEG_SUMMARY_KEYS = ("miou", "mf1", "oa", "kappa")


class _OneDate(nn.Module):
    """A single-date model behind the pair interface of the whole/slide inference (the second date is unused)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, t1: torch.Tensor, t2: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(t1)


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return x if x.shape[-2:] == tuple(size) else F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class SegmentationTask(ChangeDetectionTask):
    """:class:`~changekit.engine.task.ChangeDetectionTask`'s training and evaluation for one-image models.

    Extra args:
        aux_weight: weight of the auxiliary head's loss (models with ``forward_all``; 0 turns it off).
        class_names: names for the metrics table (default: the dataset preset's).
    """

    TASK_NAME = "segmentation"
    MONITOR = "val/miou"

    def __init__(self, *args: Any, aux_weight: float = 0.4, class_names: list[str] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("num_classes", 6)
        super().__init__(*args, **kwargs)
        self.save_hyperparameters()
        if getattr(self.model, "task", "change") != "segmentation":
            raise ConfigError(f"model {self.hparams.arch!r} is a change model (two dates); task: segmentation needs "
                              "a single-date model such as mcat-unet_segnext-s")
        if self.eval_cfg["mode"] == "mm_slide":
            raise ConfigError("model.eval.mode mm_slide labels change windows with CLIP; use whole or slide")

    def forward(self, image: torch.Tensor, *_: Any, **__: Any) -> torch.Tensor:  # type: ignore[override]
        return self.model(image)

    def seg_loss(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
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

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        loss, parts = self.seg_loss(batch["t1"], batch["label"])
        bs = batch["t1"].shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        for k, v in parts.items():
            self.log(f"train/loss_{k}", v, on_step=True, on_epoch=False, batch_size=bs)
        return loss

    def predict_logits(self, t1: torch.Tensor, t2: torch.Tensor | None = None, names=None, **_: Any) -> torch.Tensor:
        c = self.eval_cfg
        return predict_logits(_OneDate(self.model), t1, t1, c["mode"], c.get("window"), c.get("stride"), c.get("resize"))

    def _eval_step(self, batch: Mapping[str, Any], cm, prefix: str) -> None:
        label = batch["label"]
        logits = _resize(self.predict_logits(batch["t1"]), label.shape[-2:])
        loss, _ = self.criterion(logits, label)
        self.log(f"{prefix}/loss", loss, on_step=False, on_epoch=True, batch_size=label.shape[0], sync_dist=True)
        cm.update(logits.argmax(1), label)

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0) -> dict[str, Any]:
        return super().predict_step({**batch, "t2": batch["t1"]}, batch_idx, dataloader_idx)

    def _class_names(self) -> list[str] | None:
        if self.hparams.class_names:
            return list(self.hparams.class_names)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        names = list(getattr(getattr(dm, "preset", None), "class_names", ()) or ())
        return names if len(names) == self.hparams.num_classes else None

    def _eval_epoch_end(self, cm, prefix: str) -> None:
        metrics = cm.compute()
        cm.reset()
        scalars = {k: float(metrics[k]) if metrics[k] == metrics[k] else 0.0 for k in SEG_SUMMARY_KEYS}
        self.log_dict({f"{prefix}/{k}": v for k, v in scalars.items()}, on_step=False, on_epoch=True, sync_dist=False)
        for k in ("precision", "recall", "f1", "iou"):  # the change-class figures mean nothing for land cover
            metrics.pop(k, None)
        self.results[prefix] = {**metrics, "eval_mode": self.eval_mode_description}
        if self.print_tables and not self.trainer.sanity_checking and self.trainer.is_global_zero:
            print(f"\n{prefix} (step {self.global_step})\n" +
                  format_metrics_table(metrics, self.eval_mode_description, self._class_names()), flush=True)
