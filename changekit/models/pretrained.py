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

_OSCD = "OSCD, Sentinel-2 L1C, 11 cities"
_LABELS = "CC BY-NC-SA 4.0 (OSCD change maps; non-commercial)"

#: name -> card summary (docs/models_pretrained.md has the full cards). ``heldout``: pooled change-class scores
#: on data never used for training, checkpoint selection or the threshold; ``validation``: what selected them.
PRETRAINED: dict[str, dict[str, Any]] = {
    "s2-urban-13band": {
        "arch": "fc_ef", "ensemble": 3, "data": _OSCD, "bands": "13: B01-B12, B8A after B08", "gsd_m": 10,
        "threshold": 0.40, "units": "L1C digital numbers (uint16)", "recipe": "configs/pretrained/s2-urban-13band.yaml",
        "validation": {"on": "saclay_e + cupertino + hongkong", "f1": 0.519},
        "heldout": {"on": "paris + bordeaux + pisa", "f1": 0.141, "iou": 0.076, "precision": 0.091, "recall": 0.312},
        "labels_licence": _LABELS, "card": "docs/models_pretrained.md#s2-urban-13band",
    },
    "s2-urban-rgbn": {
        "arch": "fc_ef", "data": _OSCD, "bands": "4: B02 B03 B04 B08 (the 10 m bands)", "gsd_m": 10, "threshold": 0.45,
        "units": "L1C digital numbers (uint16)", "recipe": "configs/pretrained/s2-urban-rgbn.yaml",
        "validation": {"on": "saclay_e + cupertino + hongkong", "f1": 0.449},
        "heldout": {"on": "paris + bordeaux + pisa", "f1": 0.143, "iou": 0.077, "precision": 0.105, "recall": 0.225},
        "labels_licence": _LABELS, "card": "docs/models_pretrained.md#s2-urban-rgbn",
    },
    "aerial-airchange-rgb": {
        "arch": "fc_ef", "data": "SZTAKI AirChange, aerial RGB, 12 pairs", "bands": "3: red, green, blue (8-bit)",
        "gsd_m": 1.5, "threshold": 0.55, "units": "uint8 0..255", "recipe": "configs/pretrained/aerial-airchange-rgb.yaml",
        "validation": {"on": "Szada/7 + Tiszadob/5", "f1": 0.173},
        "heldout": {"on": "Szada/1 + Tiszadob/3 test rectangles", "f1": 0.450, "iou": 0.290, "precision": 0.295,
                    "recall": 0.943},
        "labels_licence": "SZTAKI AirChange: free for scientific use", "card": "docs/models_pretrained.md#aerial-airchange-rgb",
    },
}


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
        raise ConfigError(f"{name!r} is neither a file nor a model changekit ships" + (
            f" (did you mean {' or '.join(close)}?)" if close else "")
            + f"; shipped: {', '.join(pretrained_names()) or 'none'} (`changekit models`)")
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
