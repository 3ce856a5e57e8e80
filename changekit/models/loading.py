"""Models from files: ``load_model(path)`` rebuilds a trained model without Lightning.

A changekit checkpoint (``changekit fit``, the demo's ``model.ckpt``) records the configuration it was built
with; ``load_model`` reads it safely (``weights_only``), builds the model from the registry and loads the
weights strictly. Weight files that record no configuration (open-cd checkpoints, plain state dicts) need
the model's YAML config as well: ``load_model(weights, config="configs/...yaml")``.

A ``.safetensors`` file that records ``ensemble: K`` (``changekit export`` of K checkpoints) loads as a
:class:`~changekit.models.ensemble.ChangeEnsemble` of K members.

The returned model is in eval mode and carries ``model.changekit_info``: what inference needs besides the
weights (``arch``, ``arch_args``, ``num_classes``, ``ignore_index``, ``in_channels``, ``mean``, ``std``,
``bands``, ``eval``, ``task``); values a file does not record are None.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch.nn as nn

from changekit.checkpoints import CheckpointError, extract_state_dict, load_weights, read_checkpoint
from changekit.errors import ConfigError
from changekit.models.ensemble import ChangeEnsemble
from changekit.models.record import check_model_record
from changekit.models.registry import build_model, without_weights

__all__ = ["load_model", "checkpoint_model_info"]

INFO_KEYS = ("arch", "arch_args", "num_classes", "ignore_index", "in_channels", "mean", "std", "bands", "eval", "task",
             "units")


def checkpoint_model_info(ckpt: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The model configuration a changekit checkpoint records (its ``changekit`` entry, or for older files
    the Lightning hyper-parameters); :class:`CheckpointError` when there is none."""
    info = check_model_record(ckpt.get("changekit") or {}, source)
    hp = ckpt.get("hyper_parameters") or {}
    if not isinstance(hp, Mapping):
        hp = {}
    if not info:
        if "arch" not in hp:
            raise CheckpointError(
                f"{source}: no model configuration inside (not written by `changekit fit`); give the model's "
                "YAML config too (--config), or build it with changekit.build_model and use changekit.load_weights"
            )
        info = {
            "arch": hp["arch"],
            "arch_args": dict(hp.get("arch_args") or {}),
            "num_classes": int(hp.get("num_classes", 2)),
            "ignore_index": int(hp.get("ignore_index", 255)),
            "eval": dict(hp.get("eval") or {"mode": "whole"}),
        }
        dhp = ckpt.get("datamodule_hyper_parameters") or {}
        for key in ("mean", "std", "bands"):
            info[key] = dhp.get(f"resolved_{key}", dhp.get(key))
    info.setdefault("task", "semantic-change" if "num_semantic_classes" in hp else "change")
    info.setdefault("eval", {"mode": "whole"})
    for key in INFO_KEYS:
        info.setdefault(key, None)
    return check_model_record(info, source)


def _config_info(config: str | os.PathLike) -> dict[str, Any]:
    from changekit.config import load_config

    data = load_config(config)
    model = data.get("model") or {}
    model = model.get("init_args", model)
    dm = data.get("data") or {}
    dm = dm.get("init_args", dm)
    info = {k: None for k in INFO_KEYS}
    info.update(arch=model.get("arch"), arch_args=dict(model.get("arch_args") or {}),
                num_classes=int(model.get("num_classes", 2)), ignore_index=int(model.get("ignore_index", 255)),
                eval=dict(model.get("eval") or {"mode": "whole"}), mean=dm.get("mean"), std=dm.get("std"),
                bands=dm.get("bands"), task=data.get("task") or "change")
    return info


def _looks_like_a_name(path: str | os.PathLike) -> bool:
    """A bare word (no folder, no extension) that is no file: meant as a shipped model's name."""
    text = str(path)
    return not os.path.exists(text) and os.sep not in text and "." not in text


def _recorded_model(info: Mapping[str, Any], path: str) -> nn.Module:
    """The model a ``.safetensors`` record describes (an ensemble of ``info["ensemble"]`` members where it says
    so), its weights loaded strictly from ``path``."""
    spec = {"arch": info["arch"], "arch_args": without_weights(info["arch_args"] or {})}
    members = int(info.get("ensemble") or 0)
    try:
        if not members:
            return build_model(spec, num_classes=int(info["num_classes"] or 2), weights=path)
        model = ChangeEnsemble([build_model(spec, num_classes=int(info["num_classes"] or 2))
                                for _ in range(members)])
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: {e.args[0] if e.args else e}") from None
    return load_weights(model, path)


def load_model(path: str | os.PathLike | None, config: str | os.PathLike | None = None) -> nn.Module:
    """Rebuild a model from a changekit checkpoint, a shipped model's name (``"s2-urban-..."``, see
    :mod:`changekit.models.pretrained`) or a ``.safetensors`` file that records its config, or from ``config`` plus
    weights at ``path`` (either may be an open-cd file); eval mode, weights loaded strictly,
    ``model.changekit_info`` set (see module docstring).

    ``path=None`` with a config builds the configured model with the weights its config names."""
    from changekit.models.pretrained import is_pretrained_name, pretrained_path, read_model_file_info

    if config is None and path is not None and (is_pretrained_name(path) or _looks_like_a_name(path)):
        path = pretrained_path(str(path))  # a name: its weight file, or an error listing the shipped names
    recorded = (read_model_file_info(path) if config is None and path is not None
                and str(path).endswith(".safetensors") and os.path.isfile(path) else None)
    if recorded is not None:
        info = {k: None for k in INFO_KEYS} | check_model_record(recorded, str(path))
        model = _recorded_model(info, str(path))
    elif config is not None:
        info = _config_info(config)
        try:
            model = build_model(config, num_classes=info["num_classes"])
        except (KeyError, ValueError) as e:
            raise ConfigError(f"{config}: {e.args[0] if e.args else e}") from None
        if path is not None:
            load_weights(model, path)
    elif path is None:
        raise ConfigError("give a checkpoint path (a changekit checkpoint records its config) or a config")
    else:
        ckpt = read_checkpoint(path)
        if not isinstance(ckpt, Mapping):
            raise CheckpointError(f"{path}: not a changekit checkpoint (expected a dict with 'state_dict')")
        info = checkpoint_model_info(ckpt, str(path))
        try:
            # the checkpoint holds every weight: build the architecture without reading the files that
            # initialised it for training (pretrain/...), which need not exist where the model is used
            spec = {"arch": info["arch"], "arch_args": without_weights(info["arch_args"] or {})}
            model = build_model(spec, num_classes=int(info["num_classes"] or 2),
                                weights=extract_state_dict(ckpt, str(path)))
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"{path}: {e.args[0] if e.args else e}") from None
    if info.get("in_channels") is None:
        info["in_channels"] = getattr(model, "in_channels", None)
    model.changekit_info = info
    return model.eval()
