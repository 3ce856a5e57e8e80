"""Inference in NCHW vs channels-last (NHWC) per model family, through ``optimize_for_inference``: the figures
behind each family's ``inference_channels_last`` (docs/performance.md).

For every model named, the same weights run as ``optimize_for_inference(model, precision)`` with the family's
layout forced off and on; prints seconds per batch (median of ``--iters`` after two warm-up calls) and the ratio.
Weights are random: speed does not depend on them.

    .venv/bin/python benchmarks/channels_last.py [--models fc_ef,unet_r18_early] [--precisions fp32,bf16]
        [--size 512] [--batch 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import warnings
from functools import partial

import torch
from timing import median_seconds

DEFAULT_MODELS = ("fc_ef,fc_siam_conc,fc_siam_diff,unet_r18_early,unet_r18_siam-diff,bit_r18,mcat-unet_segnext-s,"
                  "changeformer_mit-b0,dsqnet_swin-t,ban_vit-b16-clip_mit-b0")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--precisions", default="fp32")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    from changekit import build_model, optimize_for_inference

    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore")  # a bf16 request without native bf16 says so once per model
    print(f"{'model':26s} {'precision':9s} {'NCHW s':>8s} {'NHWC s':>8s} {'NHWC speed-up':>14s}  declared")
    for name in a.models.split(","):
        base = build_model(name).eval()
        images = [torch.randn(a.batch, base.in_channels, a.size, a.size) for _ in range(base.num_dates)]
        for precision in a.precisions.split(","):
            timings = []
            for layout in (False, True):
                model = copy.deepcopy(base)
                model.inference_channels_last = layout
                fast = optimize_for_inference(model, precision)
                timings.append(median_seconds(partial(fast, *images), a.iters))
            declared = "yes" if type(base).inference_channels_last else "no"
            print(f"{name:26s} {fast.precision:9s} {timings[0]:8.3f} {timings[1]:8.3f} {timings[0] / timings[1]:13.2f}x  "
                  f"{declared}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
