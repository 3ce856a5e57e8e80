"""A registry of named model configurations, in the style of timm.

Every model family file in ``changekit/models`` registers factory functions with
``@register_model``; the name is the public configuration name (``bit_r18``,
``ban_vit-b16-clip_mit-b0``...). ``build_model`` accepts such a name, a mapping
``{"arch": name, "arch_args": {...}}`` or the path of a YAML config whose ``model``
section holds ``arch`` / ``arch_args`` (the layout the CLI uses).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DISCOVERED = False


def register_model(fn: Callable[..., nn.Module] | None = None, *, name: str | None = None):
    """Register ``fn`` under ``name`` (default: the function name with ``_`` kept as is)."""

    def wrap(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or f.__name__
        if key in _REGISTRY and _REGISTRY[key] is not f:
            raise ValueError(f"model name {key!r} is registered twice ({_REGISTRY[key].__module__} and {f.__module__})")
        _REGISTRY[key] = f
        return f

    return wrap(fn) if fn is not None else wrap


def _discover() -> None:
    """Import every model family module once so that their ``@register_model`` calls run."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    import changekit.models as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_") and info.name != "registry" and not info.ispkg:
            importlib.import_module(f"changekit.models.{info.name}")
    _DISCOVERED = True


def list_models(pattern: str | None = None) -> list[str]:
    _discover()
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def model_spec_from_config(config: str | Path | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Return ``(arch, arch_args)`` from a name, a mapping or a YAML config path."""
    if isinstance(config, Mapping):
        spec = config.get("model", config)
        if isinstance(spec, Mapping) and "init_args" in spec:  # LightningCLI class_path form
            spec = spec["init_args"]
        if isinstance(spec, str):
            return spec, {}
        if not isinstance(spec, Mapping) or "arch" not in spec:
            raise ValueError("model config needs an 'arch' entry naming a registered model")
        return str(spec["arch"]), dict(spec.get("arch_args") or {})
    text = str(config)
    if text.endswith((".yaml", ".yml")):
        import yaml

        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        with path.open() as f:
            data = yaml.safe_load(f) or {}
        try:
            return model_spec_from_config(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    return text, {}


def build_model(config: str | Path | Mapping[str, Any], **overrides: Any) -> nn.Module:
    """Build a change-detection model from a registered name, a spec mapping or a YAML config.

    The returned module's ``forward(t1, t2)`` takes two normalised (B, C, H, W) tensors and
    returns logits (B, num_classes, H, W). ``model.changekit_spec`` records how it was built,
    so that checkpoints can rebuild it.
    """
    arch, kwargs = model_spec_from_config(config)
    kwargs.update(overrides)
    _discover()
    if arch not in _REGISTRY:
        close = difflib.get_close_matches(arch, _REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else " Run `changekit models` to list them."
        raise KeyError(f"unknown model {arch!r}.{hint}")
    model = _REGISTRY[arch](**kwargs)
    model.changekit_spec = {"arch": arch, "arch_args": kwargs}
    return model
