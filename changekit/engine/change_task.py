"""``ChangeDetectionTask``: two dates in, a change map out (binary or multi-class change) for any registered change
model. Language-driven models (CLIPFormer) also get the batch's per-image class lists, or in ``mm_slide``
evaluation the lists CLIP zero-shot finds in every window."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from changekit.engine.task import Task
from changekit.errors import ConfigError
from changekit.metrics import SUMMARY_KEYS, ConfusionMatrix, format_metrics_table
from changekit.models.base import text_inputs

__all__ = ["ChangeDetectionTask", "model_inputs", "MODEL_INPUT_KEYS"]

#: Batch keys that are model inputs besides the two images (per-image class names of language-driven models).
MODEL_INPUT_KEYS = ("classes_a", "classes_b")


def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    return {k: batch[k] for k in MODEL_INPUT_KEYS if k in batch}


class ChangeDetectionTask(Task):
    """:class:`~changekit.engine.task.Task` for change models: ``model(t1, t2)`` -> change logits; the loss on them,
    the binary (or per-class) confusion metrics, the best checkpoint by ``val/f1``."""

    TASK_NAME = "change"
    MONITOR = "val/f1"
    IMAGE_KEYS = ("t1", "t2")
    SUMMARY_KEYS = SUMMARY_KEYS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._labeller = None  # mm_slide's per-window CLIP labeller, built on first use

    def new_metric(self) -> ConfusionMatrix:
        return ConfusionMatrix(num_classes=self.hparams.num_classes, ignore_index=self.hparams.ignore_index)

    def metrics_table(self, metrics: dict[str, Any]) -> str:
        return format_metrics_table(metrics, self.eval_mode_description)

    def forward(self, t1: torch.Tensor, t2: torch.Tensor, **inputs: Any) -> torch.Tensor:
        return self.model(t1, t2, **inputs)

    def training_loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, parts = self.criterion(self.model(batch["t1"], batch["t2"], **model_inputs(batch)), batch["label"])
        return loss, parts if len(parts) > 1 else {}

    def predict_logits(self, batch: Mapping[str, Any]) -> torch.Tensor:
        labeller = self.window_labeller() if self.eval_cfg["mode"] == "mm_slide" else None
        if labeller is not None:
            names = batch.get("name")
            labeller.context = list(names) if names is not None else None
        return self.sliding(self.model, self.images(batch), labeller=labeller, **model_inputs(batch))

    # ------------------------------------------------------------------ language models
    def window_labeller(self):
        """mm_slide's CLIP labeller, built once from ``model.eval.clip_weights`` and the data's normalisation."""
        if self._labeller is None:
            from changekit.models.text.zero_shot import load_window_labeller

            dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
            if dm is None or getattr(dm, "mean", None) is None:
                raise ConfigError("model.eval.mode mm_slide needs the data's mean/std (a datamodule with data.mean)")
            mean, std = dm._eval_stats()
            units = dm.hparams.get("units") or {}
            value_range = dm.hparams.get("input_range") or units.get("range") or (0.0, 255.0)
            c = self.eval_cfg
            self._labeller = load_window_labeller(c["clip_weights"], mean, std, value_range, int(c["top_k"]),
                                                  device=self.device)
        return self._labeller

    def _write_window_classes(self, stage: str) -> None:
        """Write the class lists mm_slide used (``<log dir>/<stage>_window_classes.json``) and say where."""
        lab = self._labeller
        if lab is None or not lab.records or self._trainer is None or not self.trainer.is_global_zero:
            return
        from changekit.atomic import write_json

        folder = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        path = folder / f"{stage}_window_classes.json"
        write_json(path, lab.summary())
        print(f"{stage}: {len(lab.records)} windows labelled with {lab.describe()}; class lists in {path}", flush=True)
        lab.records = []

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        self._say_where_class_lists_come_from(dm)
        super().setup(stage)

    def _say_where_class_lists_come_from(self, dm) -> None:
        """Language models (CLIPFormer): log which class lists the prompts get, so none is ever silent."""
        if "classes_a" not in text_inputs(self.model) or dm is None:
            return
        if (dm.hparams.get("dataset_args") or {}).get("text_classes"):
            source = "per-image CLIP class lists read from <image folder>_clipcls.json (changekit clip-labels)"
        else:
            source = ("no class lists (data.dataset_args.text_classes is off): the foreground prompt names no class, "
                      "as the released code does for a folder without a class file")
        if self.eval_cfg["mode"] == "mm_slide":
            source += f"; test/predict windows: CLIP zero-shot per window ({self.eval_cfg['clip_weights']}, " \
                      f"top {self.eval_cfg['top_k']})"
        if self._trainer is not None and self.trainer.is_global_zero:
            print(f"{self.hparams.arch} prompts: {source}", flush=True)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._write_window_classes("val")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._write_window_classes("test")

    def on_predict_epoch_end(self) -> None:
        self._write_window_classes("predict")
