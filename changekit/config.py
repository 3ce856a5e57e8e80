"""YAML configs with shared bases.

A config may start from one or more base files, as open-cd users know from ``_base_``::

    _base_: ../_base_/ban_512x512_40k_levircd.yaml      # or a list; paths relative to this file
    model:
      arch: ban_vit-b16-clip_mit-b0
      arch_args: {fm_weights: pretrain/clip_vit-base-patch16-224_3rdparty-d08f8887.pth}

Bases are merged in order, then the file itself: mappings merge key by key, every other value (lists
included) replaces the base's. :func:`load_config` returns the merged mapping; every reader of configs
(``build_model``, ``changekit info``, the Lightning CLI, ``changekit scene --config``) goes through it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from changekit.errors import ConfigError

__all__ = ["load_config", "merge", "BASE_KEY"]

BASE_KEY = "_base_"


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override``, recursively for mappings."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config and merge its ``_base_`` files into it (see the module docstring)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path.resolve()))
        raise ConfigError(f"{path}: {BASE_KEY} files include each other ({chain})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a YAML config is UTF-8 text)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or " ".join(str(e).split())
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: a config must be a mapping of sections (model, data, trainer ...)")
    bases = data.pop(BASE_KEY, None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) and b.strip() for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY} must be a file name or a list of file names (relative to this file), "
                          f"not {bases!r}")
    merged: dict[str, Any] = {}
    for b in bases:
        if not (path.parent / b).is_file():
            raise ConfigError(f"{path}: {BASE_KEY} {b!r}: no such file ({str(path.parent / b)!r}); base paths are relative "
                              "to the file that names them")
        merged = merge(merged, load_config(path.parent / b, (*_seen, path.resolve())))
    return merge(merged, data)
