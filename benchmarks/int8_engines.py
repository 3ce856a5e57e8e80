"""Which quantised engine runs a ViT-B/16's int8 linear layers fastest on this CPU (how ``int8_engine()`` was chosen).

    .venv/bin/python benchmarks/int8_engines.py
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI .venv/bin/python benchmarks/int8_engines.py     # oneDNN without AMX
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 \\
        .venv/bin/python benchmarks/int8_engines.py                                      # an AVX2-only CPU

The four linear shapes of a ViT-B/16 block at BAN's input (both dates: ``[2, 197, C]``), each fp32 and dynamically
quantised (per-channel int8 weights, as ``optimize_for_inference(model, "int8")``) with every engine this PyTorch
has, timed as the median of ``--iters`` calls; the totals are for the 9 blocks BAN runs. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings

import torch
import torch.nn as nn
from timing import median_seconds

SHAPES = ((768, 2304), (768, 768), (768, 3072), (3072, 768))  # qkv, proj, fc1, fc2
BLOCKS = 9


def _median_ms(module: nn.Module, x: torch.Tensor, iters: int) -> float:
    with torch.inference_mode():
        return median_seconds(lambda: module(x), iters, warmup=3) * 1e3


def _quantised(layer: nn.Linear, engine: str) -> nn.Module:
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    before, torch.backends.quantized.engine = torch.backends.quantized.engine, engine
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return quantize_dynamic(nn.Sequential(layer), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    finally:
        torch.backends.quantized.engine = before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from changekit.deploy.optimize import int8_engine

    engines = [e for e in ("x86", "fbgemm", "onednn") if e in torch.backends.quantized.supported_engines]
    totals = {"fp32": 0.0, **{e: 0.0 for e in engines}}
    for c_in, c_out in SHAPES:
        x = torch.randn(2, 197, c_in)
        totals["fp32"] += _median_ms(nn.Linear(c_in, c_out).eval(), x, args.iters)
        for e in engines:
            totals[e] += _median_ms(_quantised(nn.Linear(c_in, c_out).eval(), e), x, args.iters)
    print(json.dumps({
        "ms_for_9_blocks": {k: round(v * BLOCKS, 1) for k, v in totals.items()},
        "chosen": int8_engine(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL"),
        "threads": args.threads,
    }))


if __name__ == "__main__":
    main()
