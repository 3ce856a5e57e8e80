"""changekit's own trained models, shipped inside the package (``changekit/weights/<name>.safetensors``).

Each file holds the weights and, in its safetensors metadata (key ``changekit``), everything inference needs:
the architecture, the bands in order with their units and product level, the normalisation and the decision
threshold. :data:`PRETRAINED` adds what a user chooses by: the data, the held-out scores and the model card.
``changekit.load_model("s2-urban-...")`` and ``changekit scene --model NAME`` take these names; ``changekit
models`` lists them beside the architectures. ``changekit export CKPT --out NAME.safetensors`` writes such a file
from a training checkpoint (the recipes in ``configs/pretrained/`` say how each was made).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from changekit.checkpoints import CheckpointError

__all__ = ["PRETRAINED", "WEIGHTS_DIR", "pretrained_names", "pretrained_path", "is_pretrained_name",
           "write_model_file", "read_model_file_info"]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

_OSCD = "OSCD (Caye Daudt et al. 2018), Sentinel-2 L1C"
_HELDOUT = "paris + bordeaux + pisa (held out)"

#: name -> card summary. ``heldout``: pooled change-class scores on data never used for training or selection.
PRETRAINED: dict[str, dict[str, Any]] = {}


def pretrained_names() -> list[str]:
    return sorted(PRETRAINED)


def is_pretrained_name(text: str | os.PathLike) -> bool:
    return str(text) in PRETRAINED


def pretrained_path(name: str) -> Path:
    """The weight file of shipped model ``name``; a ConfigError naming the shipped ones otherwise."""
    from changekit.errors import ConfigError

    if name not in PRETRAINED:
        import difflib

        close = difflib.get_close_matches(name, PRETRAINED, n=2, cutoff=0.5)
        raise ConfigError(f"--model {name!r} is not a shipped model" + (f" (did you mean {' or '.join(close)}?)" if close
                          else "") + f"; shipped: {', '.join(pretrained_names()) or 'none'} (`changekit models`)")
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path}: the weights of {name} are missing from this installation; reinstall changekit")
    return path


def write_model_file(model: nn.Module, path: str | os.PathLike, info: dict[str, Any]) -> Path:
    """Weights (float32, contiguous) plus ``info`` (JSON) in the safetensors metadata; written atomically."""
    from safetensors.torch import save_file

    from changekit.atomic import atomic_write

    sd = {k: v.detach().to(torch.float32 if v.is_floating_point() else v.dtype).contiguous().clone()
          for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        save_file(sd, str(tmp), metadata={"changekit": json.dumps(info, sort_keys=True)})
    return path


def read_model_file_info(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``changekit`` metadata of a safetensors file (None for a file without it)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    text = meta.get("changekit")
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: its changekit metadata is not valid JSON ({e}); re-export the file") from e
