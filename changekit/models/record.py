"""The record a model file carries (a checkpoint's ``changekit`` entry, a ``.safetensors`` file's metadata, an
ONNX file's metadata), checked once when the file is read: a value of the wrong type is named with its file,
instead of failing somewhere in a scene run."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from changekit.errors import ConfigError

__all__ = ["check_model_record"]


def _int(lo: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _nums(v: Any, nonzero: bool = False) -> bool:
    return isinstance(v, list | tuple) and len(v) > 0 and all(_num(x) and (x != 0 or not nonzero) for x in v)


def _strs(v: Any) -> bool:
    return isinstance(v, list | tuple) and all(isinstance(x, str) for x in v)


def _units(v: Any) -> bool:
    return isinstance(v, Mapping) and (v.get("dtype") is None or isinstance(v["dtype"], str)) and (
        v.get("range") is None or (_nums(v["range"]) and len(v["range"]) == 2))


_STATS = ("imagenet", "clip")  # named statistics a config may give instead of numbers

#: key -> (check, what the value must be); None always passes (the file does not record it)
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "arch": (lambda v: isinstance(v, str) and bool(v), "a registered model name"),
    "arch_args": (lambda v: isinstance(v, Mapping), "a mapping of the model's arguments"),
    "num_classes": (_int(1), "a whole number >= 1"),
    "ignore_index": (_int(0), "a whole number >= 0"),
    "in_channels": (_int(1), "a whole number >= 1"),
    "mean": (lambda v: _nums(v) or v in _STATS, "a list of numbers (one per band)"),
    "std": (lambda v: _nums(v, nonzero=True) or v in _STATS, "a list of non-zero numbers (one per band)"),
    "bands": (lambda v: isinstance(v, list | tuple) and all(isinstance(b, str | int) and not isinstance(b, bool)
                                                            for b in v), "a list of band names or numbers"),
    "threshold": (lambda v: _num(v) and 0 <= v <= 1, "a probability in 0..1"),
    "units": (_units, "{dtype: ..., range: [min, max]}"),
    "task": (lambda v: v in ("change", "semantic-change", "segmentation"), "change, semantic-change or segmentation"),
    "standardize": (lambda v: v in ("per-date", "per-image"), "per-date or per-image"),
    "eval": (lambda v: isinstance(v, Mapping), "a mapping of evaluation settings"),
    "class_names": (_strs, "a list of class names"),
    "palette": (lambda v: isinstance(v, list | tuple) and all(_nums(c) and len(c) == 3 for c in v),
                "a list of [r, g, b]"),
    "fixed_size": (lambda v: isinstance(v, list | tuple) and len(v) == 2 and all(_int(1)(x) for x in v),
                   "[height, width]"),
    "fixed_batch": (_int(1), "a whole number >= 1"),
    "ensemble": (_int(2), "a whole number >= 2 (the members of an ensemble)"),
}


def check_model_record(info: Any, source: str) -> dict[str, Any]:
    """``info`` as a dict, every known key checked; :class:`ConfigError` naming ``source``, the key and the value."""
    if not isinstance(info, Mapping):
        raise ConfigError(f"{source}: its model record is a {type(info).__name__}, not a mapping; the file was not "
                          "written by changekit (or was damaged): export it again")
    for key, (ok, what) in CHECKS.items():
        v = info.get(key)
        if v is not None and not _safe(ok, v):
            raise ConfigError(f"{source}: records {key}={_short(v)}, not {what}; the file was edited or damaged: "
                              "export it again")
    return dict(info)


def _safe(ok: Callable[[Any], bool], v: Any) -> bool:
    try:
        return bool(ok(v))
    except TypeError:  # e.g. an unhashable value compared with names
        return False


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
