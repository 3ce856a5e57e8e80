"""Optimiser construction: parameter groups by name pattern and the warm-up + poly schedule by iteration.

Parameter groups follow mmengine's ``paramwise_cfg.custom_keys``: every parameter takes the settings of the
**longest** pattern that matches its name (a pattern without wildcards matches as a substring, as mmengine
does; one with ``*?[`` is an ``fnmatch`` pattern on the full name). ``no_decay_norm`` gives weight decay 0
to parameters whose name contains ``norm`` and that match no pattern (it acts like mmengine's
``custom_keys={'norm': dict(decay_mult=0)}`` with the lowest priority). Frozen parameters are left out.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from changekit.errors import ConfigError

__all__ = ["build_param_groups", "build_optimizer", "warmup_poly_factor", "linear_epoch_factor", "build_scheduler"]

_WILDCARDS = set("*?[")


def _matches(pattern: str, name: str) -> bool:
    if _WILDCARDS & set(pattern):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


def build_param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    lr: float,
    weight_decay: float,
    param_groups: Sequence[Mapping[str, Any]] | None = None,
    no_decay_norm: bool = False,
) -> list[dict[str, Any]]:
    """Return optimiser parameter groups (each with ``params``, ``lr``, ``weight_decay``, ``name``)."""
    rules = []
    for i, g in enumerate(param_groups or []):
        if "pattern" not in g:
            raise ConfigError(f"model.param_groups[{i}] needs a 'pattern' (e.g. 'backbone' or 'decoder.*')")
        unknown = set(g) - {"pattern", "lr_mult", "decay_mult"}
        if unknown:
            raise ConfigError(f"model.param_groups[{i}]: unknown keys {sorted(unknown)} (use pattern, lr_mult, decay_mult)")
        rules.append((str(g["pattern"]), float(g.get("lr_mult", 1.0)), float(g.get("decay_mult", 1.0))))
    # longest first; ties keep the order given (mmengine sorts alphabetically, then by length)
    rules.sort(key=lambda r: -len(r[0]))
    groups: dict[tuple[str, float, float], dict[str, Any]] = {}
    for name, p in named_params:
        if not p.requires_grad:
            continue
        key = ("default", 1.0, 1.0)
        for pattern, lr_mult, decay_mult in rules:
            if _matches(pattern, name):
                key = (pattern, lr_mult, decay_mult)
                break
        else:
            if no_decay_norm and "norm" in name:
                key = ("no_decay_norm", 1.0, 0.0)
        g = groups.setdefault(
            key, {"name": key[0], "params": [], "param_names": [], "lr": lr * key[1], "weight_decay": weight_decay * key[2]}
        )
        g["params"].append(p)
        g["param_names"].append(name)
    if not groups:
        raise ConfigError("the model has no trainable parameters (all requires_grad=False)")
    return list(groups.values())


def build_optimizer(groups: list[dict[str, Any]], config: Mapping[str, Any]) -> torch.optim.Optimizer:
    """AdamW or SGD from ``{type, lr, weight_decay, betas | momentum, nesterov, eps}``."""
    kind = str(config.get("type", "adamw")).lower()
    clean = [{k: v for k, v in g.items() if k != "param_names"} for g in groups]
    lr = float(config.get("lr", 1e-4))
    if kind == "adamw":
        return torch.optim.AdamW(clean, lr=lr, betas=tuple(config.get("betas", (0.9, 0.999))), eps=float(config.get("eps", 1e-8)))
    if kind == "sgd":
        return torch.optim.SGD(clean, lr=lr, momentum=float(config.get("momentum", 0.9)), nesterov=bool(config.get("nesterov", False)))
    raise ConfigError(f"model.optimizer.type must be 'adamw' or 'sgd', got {kind!r}")


def warmup_poly_factor(
    it: int,
    base_lr: float,
    warmup_iters: int = 0,
    warmup_start_factor: float = 1e-6,
    max_iters: int = 40000,
    power: float = 1.0,
    min_lr: float = 0.0,
) -> float:
    """Multiplier of ``base_lr`` at iteration ``it`` (0-based), the closed form of mmengine's
    ``LinearLR(start_factor, begin=0, end=warmup_iters)`` followed by
    ``PolyLR(power, eta_min=min_lr, begin=warmup_iters, end=max_iters)``:

    * ``it < warmup_iters``: ``start + (1 - start) * it / (warmup_iters - 1)`` (reaches 1 at ``warmup_iters - 1``);
    * afterwards ``lr = min_lr + (base_lr - min_lr) * (1 - s / T) ** power`` with ``s = it - warmup_iters`` and
      ``T = max_iters - warmup_iters - 1``; ``s`` is capped at ``T`` so the lr stays at ``min_lr`` after the end.
    """
    if it < warmup_iters:
        if warmup_iters <= 1:
            return warmup_start_factor
        return warmup_start_factor + (1.0 - warmup_start_factor) * it / (warmup_iters - 1)
    if base_lr == 0:
        return 0.0
    total = max(max_iters - warmup_iters - 1, 1)
    s = min(it - warmup_iters, total)
    lr = min_lr + (base_lr - min_lr) * (1.0 - s / total) ** power
    return lr / base_lr


SCHEDULE_KEYS = {"warmup_iters", "warmup_start_factor", "max_iters", "power", "min_lr", "policy", "max_epochs",
                 "iters_per_epoch"}


def linear_epoch_factor(it: int, iters_per_epoch: int, max_epochs: int) -> float:
    """BIT_CD's ``lr_policy='linear'``: ``LambdaLR(1 - epoch / (max_epochs + 1))`` stepped once per epoch, so the
    rate is constant within an epoch and the last epoch still trains at ``2 / (max_epochs + 1)`` of the base."""
    return 1.0 - (it // max(iters_per_epoch, 1)) / float(max_epochs + 1)


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: Mapping[str, Any] | None, max_iters: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration ``LambdaLR`` implementing :func:`warmup_poly_factor` for every parameter group, or with
    ``policy: linear_epoch`` (needs ``max_epochs`` and ``iters_per_epoch``, which the task fills in from the
    trainer) :func:`linear_epoch_factor`.

    ``schedule.max_iters`` defaults to ``max_iters`` (the trainer's total number of optimiser steps).
    """
    schedule = dict(schedule or {})
    unknown = set(schedule) - SCHEDULE_KEYS
    if unknown:
        raise ConfigError(f"model.schedule: unknown keys {sorted(unknown)}; use {sorted(SCHEDULE_KEYS)}")
    policy = schedule.get("policy", "poly")
    if policy == "linear_epoch":
        extra = set(schedule) - {"policy", "max_epochs", "iters_per_epoch"}
        if extra:
            raise ConfigError(f"model.schedule: policy linear_epoch takes no {sorted(extra)} (no warm-up, no poly)")
        if not schedule.get("max_epochs") or not schedule.get("iters_per_epoch"):
            raise ConfigError("model.schedule.policy linear_epoch needs an epoch-based run: set trainer.max_epochs")
        epochs, per_epoch = int(schedule["max_epochs"]), int(schedule["iters_per_epoch"])
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda it: linear_epoch_factor(it, per_epoch, epochs))
    if policy != "poly":
        raise ConfigError(f"model.schedule.policy {policy!r}: use poly (warm-up + poly, default) or linear_epoch")
    schedule.pop("policy", None)
    kw = {
        "warmup_iters": int(schedule.get("warmup_iters", 0)),
        "warmup_start_factor": float(schedule.get("warmup_start_factor", 1e-6)),
        "max_iters": int(schedule.get("max_iters") or max_iters),
        "power": float(schedule.get("power", 1.0)),
        "min_lr": float(schedule.get("min_lr", 0.0)),
    }
    lambdas = [
        (lambda it, base=g["initial_lr"] if "initial_lr" in g else g["lr"]: warmup_poly_factor(it, base, **kw))
        for g in optimizer.param_groups
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
