"""Golden fixtures of the reference implementation (open-cd) and the deterministic weight rule.

See ``tests/fixtures/golden/README.md``: weights are rebuilt from the key listing, loaded through
``changekit.load_weights`` as an open-cd checkpoint, and the model's output is compared with
``logits_full`` (and ``logits`` where the model exposes its decoder-resolution output).
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import torch

GOLDEN_DIR = Path(__file__).parents[1] / "fixtures" / "golden"

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64, "float64": torch.float64}


def load_golden(name: str) -> dict:
    d = np.load(GOLDEN_DIR / f"{name}.npz")
    return {
        "config": str(d["config"]),
        "seed": int(d["seed"]),
        "keys": json.loads(str(d["keys"])),
        "t1": torch.from_numpy(d["t1"]),
        "t2": torch.from_numpy(d["t2"]),
        "logits": torch.from_numpy(d["logits"]),
        "logits_full": torch.from_numpy(d["logits_full"]),
    }


def rule_tensor(key: str, shape: list[int], dtype: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + zlib.crc32(key.encode()))
    shape = tuple(shape)
    if key.endswith("num_batches_tracked"):
        t = torch.zeros(shape, dtype=torch.int64)
    elif key.endswith("running_var"):
        t = 0.5 + torch.rand(shape, generator=g)
    elif len(shape) >= 2 and key.endswith("weight"):
        t = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
    elif len(shape) >= 2:
        t = 0.02 * torch.randn(shape, generator=g)
    elif key.endswith("weight"):
        t = 1 + 0.1 * torch.randn(shape, generator=g)
    else:
        t = 0.1 * torch.randn(shape, generator=g)
    return t.to(_DTYPES[dtype])


def golden_state_dict(golden: dict) -> dict[str, torch.Tensor]:
    """The reference model's weights in open-cd's key layout, rebuilt with the weight rule."""
    return {k: rule_tensor(k, shape, dtype, golden["seed"]) for k, shape, dtype in golden["keys"]}


def golden_checkpoint(golden: dict, path: Path) -> Path:
    """Write the golden weights as an open-cd checkpoint file ``{'state_dict': ...}``."""
    torch.save({"state_dict": golden_state_dict(golden), "meta": {"config": golden["config"]}}, path)
    return path


def assert_reproduces_golden(name: str, arch: str, tmp_path: Path, atol: float = 1e-4):
    """Build ``arch``, load the golden weights through ``changekit.load_weights`` as an open-cd checkpoint,
    and check both the decoder-resolution ``logits`` and the full-resolution ``logits_full``. Returns (model, golden)."""
    import changekit

    g = load_golden(name)
    model = changekit.build_model(arch)
    changekit.load_weights(model, golden_checkpoint(g, tmp_path / f"{arch}_opencd.pth"))
    model.eval()
    with torch.no_grad():
        logits = model(g["t1"], g["t2"])
        raw = model.forward_decoder(g["t1"], g["t2"])
    assert logits.shape == g["logits_full"].shape and raw.shape == g["logits"].shape
    assert (logits - g["logits_full"]).abs().max().item() <= atol
    assert (raw - g["logits"]).abs().max().item() <= atol
    return model, g
