"""Reading weight files safely and loading them strictly.

Formats read by :func:`read_checkpoint` / :func:`read_state_dict`:

* changekit / Lightning checkpoints (``.ckpt``: ``{"state_dict": {"model.<key>": ...}, "hyper_parameters": ...}``);
* open-cd / mmengine checkpoints (``{"state_dict": ..., "meta": ...}``) in open-cd's key layout;
* plain PyTorch state dicts (``.pth``/``.pt``/``.bin``), optionally nested under ``state_dict`` or ``model``;
* ``.safetensors`` files;
* TorchScript archives (OpenAI's CLIP ``ViT-B-16.pt``), whose parameters are read without running their code.

Pickled files are opened with ``torch.load(weights_only=True)``. mmengine checkpoints also pickle
bookkeeping objects (message hubs, numpy scalars) that ``weights_only`` refuses; for those we fall back
to an unpickler that still never imports arbitrary code: it rebuilds tensors and containers and turns
every other object into an inert placeholder (:class:`Unloaded`).
"""

from __future__ import annotations

import io
import pickle
import types
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from changekit.errors import ChangekitError, first_line

__all__ = ["CheckpointError", "Unloaded", "read_checkpoint", "read_state_dict", "load_weights", "check_state_dict"]


class CheckpointError(ChangekitError):
    """A weight file that cannot be read or does not fit the model."""


# --------------------------------------------------------------------------------------------- reading
class Unloaded:
    """Stands in for a pickled object whose class we refuse to import (it is never executed)."""

    def __new__(cls, *args: Any, **kwargs: Any):
        obj = object.__new__(cls)
        obj.args = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<unloaded {type(self).__qualname__}>"


_SAFE_BUILTINS = {"set", "frozenset", "slice", "complex", "bytearray", "int", "float", "bool", "str", "tuple", "list", "dict", "bytes"}


class _InertUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return super().find_class(module, name)
        if module == "torch._utils" and name.startswith("_rebuild_"):
            return super().find_class(module, name)
        if module == "torch._tensor" and name == "_rebuild_from_type_v2":
            return super().find_class(module, name)
        if module == "torch" and (name in {"Size", "device", "Tensor"} or isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        if module == "torch.nn.parameter" and name == "Parameter":
            return super().find_class(module, name)
        if module == "builtins" and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        return type(name, (Unloaded,), {"__module__": f"unloaded.{module}"})


_inert_pickle = types.SimpleNamespace(
    __name__="changekit_inert_pickle",
    Unpickler=_InertUnpickler,
    load=lambda f, **kw: _InertUnpickler(f, **kw).load(),
    loads=lambda b, **kw: _InertUnpickler(io.BytesIO(b), **kw).load(),
)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.split("/", 1)[-1].startswith("code/") for n in z.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):  # a damaged archive: torch.load says what is wrong
        return False


def read_checkpoint(path: str | Path) -> Any:
    """Return the raw object stored in a weight file (see the module docstring for formats)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weight file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({first_line(e)})") from e
    if _is_torchscript(path):
        try:
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        except Exception as e:
            raise CheckpointError(f"{path}: TorchScript archive could not be read ({first_line(e)})") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # objects weights_only refuses (mmengine meta): read them inertly below
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {first_line(e)})") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_inert_pickle)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {first_line(e)})") from e


def _tensor_items(d: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in d.items() if isinstance(v, torch.Tensor)}


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the state dict inside a checkpoint object (``state_dict``, ``model``, ``module`` or the dict itself)."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "module", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and _tensor_items(inner):
                return _tensor_items(inner)
        tensors = _tensor_items(obj)
        if tensors:
            return tensors
    raise CheckpointError(f"{source}: no state dict (a mapping of parameter names to tensors) found")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weight file and return its state dict, unwrapped."""
    return extract_state_dict(read_checkpoint(path), str(path))


# --------------------------------------------------------------------------------------------- loading
def _strip_prefix(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def check_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` unless ``sd`` has exactly the model's keys with the model's shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return

    def part(title: str, items: list[str]) -> str:
        shown = ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")
        return f"{title} ({len(items)}): {shown}"

    name = getattr(model, "changekit_spec", {}).get("arch", type(model).__name__)
    parts = [part(t, i) for t, i in (("missing keys", missing), ("unexpected keys", unexpected),
                                      ("shape mismatches", shapes)) if i]
    raise CheckpointError(f"{source} does not fit model {name!r}: {'; '.join(parts)}. "
                          "Check that it was trained with this model configuration")


def _mismatch(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> int:
    own = model.state_dict()
    return len(own.keys() ^ sd.keys()) + sum(tuple(sd[k].shape) != tuple(v.shape) for k, v in own.items() if k in sd)


def load_weights(model: nn.Module, weights: str | Path | Mapping[str, torch.Tensor]) -> nn.Module:
    """Load changekit, Lightning or open-cd weights into ``model``, strictly.

    Every key of the file must be used, none may be missing and every shape must match; otherwise a
    :class:`CheckpointError` names the file and lists the differences. open-cd key layouts are mapped
    by the model's ``convert_opencd_state_dict`` method when the model defines one.
    """
    source = "state dict" if isinstance(weights, Mapping) else str(weights)
    sd = extract_state_dict(weights, source) if isinstance(weights, Mapping) else read_state_dict(weights)
    candidates = [_strip_prefix(sd, "model."), sd, _strip_prefix(sd, "module.")]
    convert = getattr(model, "convert_opencd_state_dict", None)
    if convert is not None:
        try:
            candidates.append(convert(dict(sd)))
        except (KeyError, ValueError):
            pass  # not in open-cd layout; the other candidates are judged below
    best = min(candidates, key=lambda c: _mismatch(model, c))
    check_state_dict(model, best, source)
    model.load_state_dict(best, strict=True)
    return model
