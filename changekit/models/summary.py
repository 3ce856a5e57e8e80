"""Parameters and FLOPs of a model configuration (what ``changekit info`` reports).

Parameters are split by ``requires_grad`` into trainable and frozen, in total and per top-level module.
FLOPs are counted for one image pair of the given size (both dates go through the network, as open-cd's
``tools/analysis_tools/get_flops.py`` feeds its 6-channel input), with PyTorch's
``torch.utils.flop_counter.FlopCounterMode``. That counter counts 2 FLOPs per multiply-add of convolutions,
matrix products and attention; we divide by 2, so **one multiply-add counts as one FLOP**, the convention of
open-cd's mmengine counter. Unlike mmengine's counter it ignores element-wise work (normalisation, activations,
resizing), which is typically 1-2 % of the total for these models.

The forward pass for counting runs on PyTorch's ``meta`` device (shapes only, no arithmetic) when the model
allows it, and on CPU otherwise.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn

FLOP_CONVENTION = (
    "multiply-add = 1 FLOP (torch FlopCounterMode count / 2; conv, matmul and attention only), both dates"
)


def parameter_counts(model: nn.Module) -> dict[str, Any]:
    """Total / trainable / frozen parameter counts, overall and per top-level child module."""

    def count(params) -> tuple[int, int]:
        total = trainable = 0
        for p in params:
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
        return total, trainable

    total, trainable = count(model.parameters())
    modules: dict[str, dict[str, int]] = {}
    seen = 0
    for name, child in model.named_children():
        t, tr = count(child.parameters())
        if t:
            modules[name] = {"params": t, "trainable": tr, "frozen": t - tr}
            seen += t
    direct = [p for n, p in model.named_parameters(recurse=False)]
    if direct:
        t, tr = count(direct)
        modules["(own parameters)"] = {"params": t, "trainable": tr, "frozen": t - tr}
    return {
        "params_total": total,
        "params_trainable": trainable,
        "params_frozen": total - trainable,
        "modules": modules,
    }


def _count_flops(
    model: nn.Module, in_channels: int, size: tuple[int, int], device: str
) -> tuple[int, dict[str, int]]:
    from torch.utils.flop_counter import FlopCounterMode

    model = model.to(device).eval()
    # change models take a pair of dates; single-date (segmentation) models one image
    inputs = [torch.zeros(1, in_channels, *size, device=device)] * (1 if getattr(model, "task", "") == "segmentation" else 2)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    # Names are "<RootClass>.<child>[.<grandchild>...]". A child that is never called itself (a ModuleList
    # indexed by the parent) has no entry of its own: sum its shallowest called descendants instead.
    shallowest: dict[str, tuple[int, int]] = {}  # child -> (depth, flops)
    for name, ops in counter.get_flop_counts().items():
        parts = name.split(".")
        if len(parts) < 2:
            continue
        depth, flops = len(parts), sum(ops.values()) // 2
        best = shallowest.get(parts[1])
        if best is None or depth < best[0]:
            shallowest[parts[1]] = (depth, flops)
        elif depth == best[0]:
            shallowest[parts[1]] = (depth, best[1] + flops)
    return counter.get_total_flops() // 2, {k: v for k, (_, v) in shallowest.items()}


def count_flops(
    model: nn.Module,
    size: tuple[int, int],
    in_channels: int | None = None,
    rebuild: Callable[[], nn.Module] | None = None,
) -> tuple[int, dict[str, int]]:
    """FLOPs (multiply-adds) of one forward pass on a pair of (1, C, H, W) inputs (one for segmentation models),
    and per top-level module.

    Runs on the meta device when the model allows it and on CPU otherwise (data-dependent Python control
    flow, ``.item()``...). Without ``rebuild`` it works on a copy of ``model``; with it, ``model`` itself is
    moved to the meta device (no copy of large frozen weights) and ``rebuild()`` supplies a real model for the
    CPU fallback.
    """
    c = in_channels or getattr(model, "in_channels", 3)
    try:
        meta = (model if rebuild is not None else copy.deepcopy(model)).to("meta")
        return _count_flops(meta, c, size, "meta")
    except Exception:  # noqa: BLE001 - any meta-device limitation: count on a real model instead
        return _count_flops(rebuild() if rebuild is not None else model, c, size, "cpu")


def model_info(config: Any, size: Sequence[int] = (512, 512)) -> dict[str, Any]:
    """Everything ``changekit info`` reports, as a JSON-ready dict."""
    from changekit.models.registry import build_model, is_weight_arg, model_spec_from_config

    arch, args = model_spec_from_config(config)
    # Counts do not depend on weight values: build the architecture without reading weight files, so a
    # config can be inspected before its pretrained files are downloaded.
    skipped = sorted(k for k in args if is_weight_arg(k) and args[k] is not None)
    spec = {"arch": arch, "arch_args": {k: v for k, v in args.items() if k not in skipped}}
    model = build_model(spec)
    info: dict[str, Any] = {"model": arch, "config": str(config), "input_size": [int(size[0]), int(size[1])]}
    if skipped:
        info["weights_not_loaded"] = skipped
    info["in_channels"] = int(getattr(model, "in_channels", 3))
    info["num_classes"] = getattr(model, "num_classes", None)
    info.update(parameter_counts(model))
    flops, per_module = count_flops(
        model, (int(size[0]), int(size[1])), info["in_channels"], rebuild=lambda: build_model(spec)
    )
    info["flops"] = flops
    single = getattr(model, "task", "change") == "segmentation"
    info["flops_convention"] = FLOP_CONVENTION.replace("both dates", "one image") if single else FLOP_CONVENTION
    for name, entry in info["modules"].items():
        entry["flops"] = per_module.get(name, 0)
    rest = flops - sum(e["flops"] for e in info["modules"].values())
    if rest > 0:  # work done in the model's own forward (or in parameter-free children)
        info["modules"]["(other)"] = {"params": 0, "trainable": 0, "frozen": 0, "flops": rest}
    return info


def model_table(pattern: str | None = None, on_model: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One row per registered model matching ``pattern``: ``name``, ``family``, ``params_total``,
    ``params_trainable`` (architecture only: frozen foundation models are built shape-only) and ``published``
    (``[{dataset, f1, source}]``). ``on_model(name)`` is called as each is counted (progress)."""
    from changekit.models.registry import build_model, family_of, get_factory, list_models, published

    rows = []
    for name in list_models(pattern):
        params = inspect.signature(get_factory(name)).parameters
        kw = {"fm_init": "meta"} if "fm_init" in params or family_of(name) == "ban" else {}
        counts = parameter_counts(build_model(name, **kw))
        rows.append({"name": name, "family": family_of(name), "params_total": counts["params_total"],
                     "params_trainable": counts["params_trainable"],
                     "published": [{"dataset": d, "f1": f1, "source": s} for d, f1, s in published(name)]})
        if on_model is not None:
            on_model(name)
    return rows
