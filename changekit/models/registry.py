"""A registry of named model configurations, in the style of timm.

Every model family in ``changekit/models`` registers its named configurations with one call each,
``register_model(name, builder, *args, published=...)``; the name is the public configuration name (``bit_r18``,
``ban_vit-b16-clip_mit-b0``...), registered next to the results its sources publish. ``build_model`` accepts such a name, a mapping
``{"arch": name, "arch_args": {...}}`` or the path of a YAML config whose ``model``
section holds ``arch`` / ``arch_args`` (the layout the CLI uses).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch.nn as nn

from changekit.checkpoints import load_weights
from changekit.errors import ChangekitError, ConfigError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_PUBLISHED: dict[str, list[tuple[str, float, str]]] = {}
_DISCOVERED = False


def register_model(name: str, builder: Callable[..., nn.Module], *args: Any, doc: str | None = None,
                   published: Sequence[tuple[str, float, str]] = ()) -> None:
    """Register the named configuration ``name`` = ``builder(*args, **kwargs)`` (``fc_ef`` = ``fc_siam("early")``,
    ``ban_vit-b16-clip_mit-b0`` = ``ban("clip_vit-b16", "mit-b0")``), with its published results ``(dataset,
    change-class F1 in %, source)`` where its sources print any (``changekit models`` shows them). The factory
    shows the builder's remaining parameters, so ``build_model`` passes ``num_classes`` and ``weights`` through;
    ``doc`` defaults to the builder's."""
    if name in _REGISTRY:
        raise ValueError(f"model name {name!r} is registered twice ({_REGISTRY[name].__module__} and "
                         f"{builder.__module__})")

    def factory(**kwargs: Any) -> nn.Module:
        return builder(*args, **kwargs)

    params = list(inspect.signature(builder).parameters.values())[len(args):]
    factory.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    factory.__name__ = factory.__qualname__ = name.replace("-", "_")
    factory.__module__ = builder.__module__
    factory.__doc__ = doc or builder.__doc__
    _REGISTRY[name] = factory
    _PUBLISHED[name] = list(published)


def published(arch: str) -> list[tuple[str, float, str]]:
    """The published results of ``arch`` (empty when its sources print none)."""
    _discover()
    return list(_PUBLISHED.get(arch, []))


#: Packages of ``changekit/models`` that hold parts several families share, not families.
SHARED_PACKAGES = ("backbones", "foundation", "text")
#: Modules of ``changekit/models`` that are not families: the machinery around them and the shared parts.
NOT_FAMILIES = ("base", "registry", "loading", "summary", "hub", "pretrained", "record", "recompute", "cswin",
                *SHARED_PACKAGES)


def _discover() -> None:
    """Import every model family (a module or a package of ``changekit/models``) once, so that their
    ``register_model`` calls run."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("_") or info.name in NOT_FAMILIES:
            continue
        importlib.import_module(f"changekit.models.{info.name}")
    _DISCOVERED = True


def is_weight_arg(name: str) -> bool:
    """Factory arguments that name weight files (``weights``, ``fm_weights``, ``backbone_weights`` ...)."""
    return name == "weights" or name.endswith("_weights")


def without_weights(arch_args: Mapping[str, Any]) -> dict[str, Any]:
    """``arch_args`` less the weight files: the architecture alone (for counting, or before loading a checkpoint
    that holds every weight)."""
    return {k: v for k, v in arch_args.items() if not is_weight_arg(k)}


def get_factory(arch: str) -> Callable[..., nn.Module]:
    """The factory registered as ``arch``; ``KeyError`` with the closest names otherwise."""
    _discover()
    if arch not in _REGISTRY:
        close = difflib.get_close_matches(arch, _REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else " Run `changekit models` to list them."
        raise KeyError(f"unknown model {arch!r}.{hint}")
    return _REGISTRY[arch]


def family_of(arch: str) -> str:
    """The family (the module or package under ``changekit/models``) that registers ``arch``."""
    module = get_factory(arch).__module__
    return module.split(".")[2] if module.startswith("changekit.models.") else module


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
        args = spec.get("arch_args") or {}
        if not isinstance(spec["arch"], str) or not isinstance(args, Mapping):
            raise ValueError(f"model config: 'arch' must be a model name and 'arch_args' a mapping of its arguments "
                             f"(got arch={spec['arch']!r}, arch_args={args!r})")
        return spec["arch"], dict(args)
    text = str(config)
    if text.endswith((".yaml", ".yml")):
        from changekit.config import load_config

        try:
            return model_spec_from_config(load_config(text))
        except ChangekitError:
            raise
        except ValueError as e:
            raise ConfigError(f"{text}: {e}") from None
    return text, {}


def build_model(config: str | Path | Mapping[str, Any], num_classes: int | None = None, **overrides: Any) -> nn.Module:
    """Build a change-detection model from a registered name, a spec mapping or a YAML config.

    Weight arguments follow one vocabulary: ``weights`` is a whole-model file (changekit, Lightning or open-cd
    checkpoint, loaded strictly), ``<part>_weights`` the weights of one part (``backbone_weights``,
    ``fm_weights``, ``bitab_weights``, ``clip_weights``), given as files or hub names (:mod:`changekit.models.hub`).

    The returned module's ``forward(t1, t2)`` takes two normalised (B, C, H, W) tensors and
    returns logits (B, num_classes, H, W). ``model.changekit_spec`` records how it was built,
    so that checkpoints can rebuild it. ``num_classes`` is passed to factories that take it (unless the
    spec sets it) and checked against the built model's ``num_classes``.
    """
    arch, kwargs = model_spec_from_config(config)
    kwargs.update(overrides)
    factory = get_factory(arch)
    params = inspect.signature(factory).parameters
    if num_classes is not None and "num_classes" not in kwargs:
        if "num_classes" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
            kwargs["num_classes"] = num_classes
    # `weights` (a whole-model file) means the same for every model: factories that can use it to skip
    # work (BAN allocates its frozen ViT uninitialised) take it; for the others it is loaded here
    weights = kwargs.get("weights") if "weights" not in params else None
    given = {k: v for k, v in kwargs.items() if not (k == "weights" and "weights" not in params)}
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(given) - set(params))
        if unknown:
            raise ConfigError(f"model {arch!r} takes no argument(s) {', '.join(unknown)}; it takes: "
                              f"{', '.join(n for n in params if not n.startswith('_'))}")
    try:
        model = factory(**given)
    except ChangekitError:
        raise
    except (TypeError, ValueError, RuntimeError) as e:  # a value of the wrong type or out of range
        raise ConfigError(f"model {arch!r} cannot be built with arch_args {given}: {' '.join(str(e).split())}") from None
    if weights is not None:
        load_weights(model, weights)
    got = getattr(model, "num_classes", num_classes)
    if num_classes is not None and got != num_classes:
        raise ValueError(f"model {arch!r} predicts {got} classes but {num_classes} were asked for")
    recorded = {k: v for k, v in kwargs.items() if not (k == "weights" and isinstance(v, Mapping))}
    model.changekit_spec = {"arch": arch, "arch_args": recorded}
    return model
