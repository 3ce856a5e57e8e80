"""``Task``: what every training task shares (optimiser and schedule, logging, checkpoint selection and record,
the whole/sliding-window evaluation, the band check). A task is a sibling subclass that defines only its inputs,
loss, metrics and outputs: change (:mod:`changekit.engine.change_task`), semantic change
(:mod:`changekit.engine.scd_task`), single-date segmentation (:mod:`changekit.engine.seg_task`)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F

from changekit.checkpoints import load_weights
from changekit.engine.inference import describe_eval_mode, predict_logits
from changekit.engine.losses import ChangeLoss
from changekit.engine.optim import build_optimizer, build_param_groups, build_scheduler
from changekit.errors import ConfigError
from changekit.models import build_model
from changekit.models.registry import get_factory

__all__ = ["Task", "build_task_model"]

EVAL_KEYS = {"mode", "window", "stride", "crop_size", "resize", "clip_weights", "top_k"}
OPTIM_KEYS = {"type", "name", "lr", "weight_decay", "betas", "momentum", "nesterov", "eps"}


def _check_eval(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    cfg = dict(cfg or {"mode": "whole"})
    if "crop_size" in cfg:  # open-cd's name for the window
        cfg.setdefault("window", cfg.pop("crop_size"))
    unknown = set(cfg) - EVAL_KEYS
    if unknown:
        raise ConfigError(f"model.eval: unknown keys {sorted(unknown)}; use mode (whole|slide|mm_slide), window, "
                          "stride, resize (and clip_weights, top_k for mm_slide)")
    cfg.setdefault("mode", "whole")
    describe_eval_mode(cfg["mode"], cfg.get("window"), cfg.get("stride"), cfg.get("resize"))  # validates
    if cfg["mode"] not in ("whole", "slide", "mm_slide"):
        raise ConfigError(f"model.eval.mode must be 'whole', 'slide' or 'mm_slide', got {cfg['mode']!r}")
    if cfg["mode"] == "mm_slide":
        if not cfg.get("clip_weights"):
            raise ConfigError("model.eval.mode mm_slide labels every window with CLIP zero-shot: set "
                              "model.eval.clip_weights (OpenAI's ViT-B-16.pt, an open_clip file or hub name)")
        cfg.setdefault("top_k", 9)  # the released labeller's
    elif "clip_weights" in cfg or "top_k" in cfg:
        raise ConfigError("model.eval.clip_weights / top_k only apply to mode mm_slide")
    return cfg


def build_task_model(arch: str, arch_args: Mapping[str, Any] | None, num_classes: int) -> nn.Module:
    """``arch`` from the registry with ``num_classes``; configuration problems as :class:`ConfigError`."""
    try:
        factory = get_factory(arch)
    except KeyError as e:
        raise ConfigError(f"model.arch: {e.args[0]}") from None
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(arch_args or {}) - set(params) - {"weights"})
        if unknown:
            raise ConfigError(f"model.arch_args: {', '.join(map(repr, unknown))} is not an argument of {arch!r}; "
                              f"it takes {', '.join(p for p in params if p != 'weights')} (and weights)")
    try:
        return build_model({"arch": arch, "arch_args": dict(arch_args or {})}, num_classes=num_classes)
    except TypeError as e:  # an argument the factory passes on and its builder rejects, or of the wrong type
        raise ConfigError(f"model.arch_args of {arch!r}: {e}") from None
    except ValueError as e:
        raise ConfigError(f"model: {e.args[0] if e.args else e}") from None


def _check_numbers(section: str, cfg: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    """``model.optimizer.lr: fast`` and the like: one line naming the key, before any training starts."""
    for k in keys:
        v = cfg.get(k)
        values = v if isinstance(v, (list, tuple)) else [v]
        for x in values:
            if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float))):
                try:
                    float(x)
                except (TypeError, ValueError):
                    raise ConfigError(f"{section}.{k}: {v!r} is not a number") from None


class Task(pl.LightningModule):
    """Train/evaluate a model built from the registry; subclasses say what goes in and what comes out.

    Args:
        arch: registered model name (``changekit models`` lists them), e.g. ``fc_siam_diff``.
        arch_args: keyword arguments of the model factory (``in_channels``, backbone weights...).
        weights: optional weight file loaded strictly with :func:`changekit.load_weights` (ours or open-cd's).
        num_classes: number of output classes (2 for binary change).
        ignore_index: label value excluded from loss and metrics.
        loss: ``{ce: 1.0, dice: 0.0, avg_non_ignore: false, class_weight: null, ohem: {thresh, min_kept}}``; the CE mean is over all
            pixels as in mmseg (``avg_non_ignore: false``).
        optimizer: ``{type (or name): adamw|sgd, lr, weight_decay, betas | momentum, nesterov, eps}``.
        param_groups: ``[{pattern, lr_mult, decay_mult}]``, longest matching pattern wins (mmengine custom_keys).
        no_decay_norm: weight decay 0 for parameters whose name contains ``norm`` (and that match no group).
        schedule: ``{warmup_iters (or warmup_epochs), warmup_start_factor, max_iters, power, min_lr}``: linear warm-up then poly,
            by iteration; ``max_iters`` defaults to the trainer's number of optimiser steps.
        grad_clip: clip the global gradient L2 norm to this value (None: off).
        eval: ``{mode: whole|slide, window: [h, w], stride: [h, w], resize: [h, w] (optional, keep-ratio
            rescale first)}`` used by validate/test/predict.

    A subclass sets :attr:`TASK_NAME` (what checkpoints record and configs name), :attr:`MONITOR` (the metric the
    best checkpoint is chosen by), :attr:`IMAGE_KEYS` (the batch's images, one per date) and defines
    :meth:`training_loss`, :meth:`new_metric` and :meth:`metrics_table` (and :meth:`evaluate` where its outputs
    are not one logits map).
    """

    TASK_NAME = ""
    MONITOR = ""
    IMAGE_KEYS: tuple[str, ...] = ()
    SUMMARY_KEYS: tuple[str, ...] = ()  # the scalars logged per evaluation (``val/<key>``)

    def __init__(
        self,
        arch: str,
        arch_args: dict[str, Any] | None = None,
        weights: str | None = None,
        num_classes: int = 2,
        ignore_index: int = 255,
        loss: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        param_groups: list[dict[str, Any]] | None = None,
        no_decay_norm: bool = False,
        schedule: dict[str, Any] | None = None,
        grad_clip: float | None = None,
        eval: dict[str, Any] | None = None,  # noqa: A002 - the config key users write
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.eval_cfg = _check_eval(eval)
        optimizer = dict(optimizer or {})
        unknown = set(optimizer) - OPTIM_KEYS
        if unknown:
            raise ConfigError(f"model.optimizer: unknown keys {sorted(unknown)}; use {sorted(OPTIM_KEYS)}")
        if "name" in optimizer:  # alias of `type`
            optimizer.setdefault("type", optimizer.pop("name"))
        _check_numbers("model.optimizer", optimizer, ("lr", "weight_decay", "momentum", "eps", "betas"))
        _check_numbers("model.schedule", schedule or {}, ("warmup_iters", "warmup_epochs", "warmup_start_factor",
                                                          "max_iters", "power", "min_lr"))
        _check_numbers("model.loss", loss or {}, ("ce", "dice", "class_weight"))
        if grad_clip is not None:
            _check_numbers("model", {"grad_clip": grad_clip}, ("grad_clip",))
        self.optim_cfg = optimizer
        self.model = build_task_model(arch, arch_args, num_classes)
        if weights:
            load_weights(self.model, weights)
        self.criterion = ChangeLoss(loss or {"ce": 1.0}, ignore_index=ignore_index)
        self.val_cm = self.new_metric()
        self.test_cm = self.new_metric()
        self.results: dict[str, dict[str, Any]] = {}  # stage -> last computed metrics
        self.print_tables = True

    # ------------------------------------------------------------------ what a task defines
    def training_loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of a training batch, and its parts to log (``train/loss_<part>``)."""
        raise NotImplementedError

    def new_metric(self):
        """An empty metric accumulator (``update`` per batch, ``compute`` and ``reset`` per evaluation)."""
        raise NotImplementedError

    def metrics_table(self, metrics: dict[str, Any]) -> str:
        raise NotImplementedError

    def shown_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The computed metrics as results and tables show them."""
        return metrics

    def images(self, batch: Mapping[str, Any]) -> list[torch.Tensor]:
        return [batch[k] for k in self.IMAGE_KEYS]

    def predict_logits(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Logits of the batch's images with the configured whole/slide evaluation."""
        return self.sliding(self.model, self.images(batch))

    def evaluate(self, batch: Mapping[str, Any], metric) -> torch.Tensor:
        """Predict an evaluation batch, count it into ``metric``, return its loss."""
        label = batch["label"]
        logits = self.predict_logits(batch)
        if logits.shape[-2:] != label.shape[-2:]:
            logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
        loss, _ = self.criterion(logits, label)
        metric.update(logits.argmax(1), label)
        return loss

    # ------------------------------------------------------------------ shared
    def sliding(self, fn, images: list[torch.Tensor], **kwargs: Any) -> torch.Tensor:
        """``fn(*images)`` whole or in sliding windows, as ``model.eval`` says."""
        c = self.eval_cfg
        return predict_logits(fn, images, c["mode"], c.get("window"), c.get("stride"), c.get("resize"), **kwargs)

    @property
    def eval_mode_description(self) -> str:
        c = self.eval_cfg
        return describe_eval_mode(c["mode"], c.get("window"), c.get("stride"), c.get("resize"))

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        bands = getattr(dm, "in_channels", None)
        own = getattr(self.model, "in_channels", None)
        if bands is not None and own is not None and int(bands) != int(own):
            raise ConfigError(
                f"the data have {bands} bands per date but model {self.hparams.arch!r} expects {own}; "
                f"set model.arch_args.in_channels: {bands} (or data.bands)"
            )

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        loss, parts = self.training_loss(batch)
        bs = batch[self.IMAGE_KEYS[0]].shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        for k, v in parts.items():
            self.log(f"train/loss_{k}", v, on_step=True, on_epoch=False, batch_size=bs)
        return loss

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if self.hparams.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=float(self.hparams.grad_clip), gradient_clip_algorithm="norm")
        elif gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm)

    def configure_optimizers(self):
        cfg = self.optim_cfg
        lr = float(cfg.get("lr", 1e-4))
        groups = build_param_groups(
            self.model.named_parameters(),
            lr=lr,
            weight_decay=float(cfg.get("weight_decay", 1e-4)),
            param_groups=self.hparams.param_groups,
            no_decay_norm=bool(self.hparams.no_decay_norm),
        )
        opt = build_optimizer(groups, {**cfg, "lr": lr})
        max_iters = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        schedule = dict(self.hparams.schedule or {})
        if schedule.get("policy") == "linear_epoch":  # BIT_CD's per-epoch linear decay
            epochs = self.trainer.max_epochs if self._trainer is not None else None
            if epochs and epochs > 0:
                schedule.update(max_epochs=epochs, iters_per_epoch=max(1, max_iters // epochs))
        if "warmup_epochs" in schedule:  # open-cd's by_epoch warm-up, converted to iterations as mmengine does
            epochs = self.trainer.max_epochs if self._trainer is not None else None
            if not epochs or epochs < 0:
                raise ConfigError("model.schedule.warmup_epochs needs trainer.max_epochs (an epoch-based run)")
            per_epoch = max(1, max_iters // epochs)
            schedule["warmup_iters"] = int(round(float(schedule.pop("warmup_epochs")) * per_epoch))
        sched = build_scheduler(opt, schedule, max_iters)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: Mapping[str, Any], metric, prefix: str) -> None:
        loss = self.evaluate(batch, metric)
        self.log(f"{prefix}/loss", loss, on_step=False, on_epoch=True, batch_size=batch["label"].shape[0],
                 sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, self.val_cm, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, self.test_cm, "test")

    def _eval_epoch_end(self, metric, prefix: str) -> None:
        metrics = metric.compute()  # synchronised over processes by torchmetrics
        metric.reset()
        # undefined values (e.g. precision/F1 when nothing is predicted as change) are logged as 0 so that
        # checkpoint selection and curves stay usable; the table and JSON show them as n/a
        scalars = {k: float(metrics[k]) if metrics[k] == metrics[k] else 0.0 for k in self.SUMMARY_KEYS if k in metrics}
        self.log_dict({f"{prefix}/{k}": v for k, v in scalars.items()}, on_step=False, on_epoch=True, sync_dist=False)
        metrics = self.shown_metrics(metrics)
        self.results[prefix] = {**metrics, "eval_mode": self.eval_mode_description}
        if self.print_tables and not self.trainer.sanity_checking and self.trainer.is_global_zero:
            print(f"\n{prefix} (step {self.global_step})\n" + self.metrics_table(metrics), flush=True)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end(self.val_cm, "val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end(self.test_cm, "test")

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0) -> dict[str, Any]:
        pred = self.predict_logits(batch).argmax(1).to(torch.uint8).cpu()
        label = batch["label"].cpu() if "label" in batch else None
        preds, labels = list(pred), list(label) if label is not None else None
        if "hw" in batch:  # crop the padding (size_divisor) away again
            for i, (h, w) in enumerate(batch["hw"].tolist()):
                preds[i] = preds[i][:h, :w]
                if labels is not None:
                    labels[i] = labels[i][:h, :w]
        out: dict[str, Any] = {"name": list(batch["name"]), "pred": preds}
        if labels is not None:
            out["label"] = labels
        return out

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_info(self) -> dict[str, Any]:
        """What a checkpoint needs to rebuild the model and its input normalisation without the config."""
        hp = self.hparams
        info: dict[str, Any] = {
            "arch": hp.arch,
            "arch_args": dict(hp.arch_args or {}),
            "num_classes": int(hp.num_classes),
            "ignore_index": int(hp.ignore_index),
            "in_channels": getattr(self.model, "in_channels", None),
            "eval": dict(self.eval_cfg),
            "task": self.TASK_NAME,
        }
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "normalisation_info"):
            info.update(dm.normalisation_info())
        return info

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["changekit"] = _plain(self.checkpoint_info())


def _plain(obj: Any) -> Any:
    """Lists/dicts/scalars only, so that ``torch.load(weights_only=True)`` reads the checkpoint."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if torch.is_tensor(obj):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)
