"""What BAN's frozen foundation model costs on CPU, with and without autograd through it.

    .venv/bin/python benchmarks/ban_frozen_fm.py                      # B/16-CLIP + MiT-b0 at 512, batch 1
    .venv/bin/python benchmarks/ban_frozen_fm.py --size 256 --batch 2 --iters 3 --threads 4

Two variants of the same model (``ban_vit-b16-clip_mit-b0``):

* **frozen** (changekit's BAN): every FM parameter has ``requires_grad=False``, the FM runs under
  ``torch.no_grad()`` in eval mode, both dates in one batch; nothing of the FM is kept for backward;
* **autograd FM**: the same network with the FM's parameters requiring gradients and no ``no_grad``
  (what a naive port that only leaves the FM out of the optimiser does): autograd records the whole ViT,
  keeps its activations and computes its gradients.

For each, two cases run in a fresh subprocess so that the peak memory is the case's own:

* **train step**: ``model.train()``, forward + cross-entropy + backward + AdamW step on the trainable parameters;
* **inference**: ``model.eval()``, a plain forward call (no ``torch.no_grad()`` around it, as in user code that
  forgets it; under ``inference_mode`` both variants cost the same).

Throughput: both variants are built in one process (same weights) and their calls are **interleaved**, so that
both see the same machine load (this matters on shared CPUs); pairs/s comes from the median of ``--iters``
timed calls per variant after ``--warmup``. Memory: each case runs alone in a fresh subprocess and reports the
growth of its peak resident set (``VmHWM``, reset once the model is built) over the resident set at that point.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

from proc_memory import reset_peak, status_kib  # benchmarks/ is on sys.path when a script runs

ARCH = "ban_vit-b16-clip_mit-b0"


def _setup(variant: str, mode: str, size: int, batch: int):
    import torch
    import torch.nn.functional as F

    import changekit

    torch.manual_seed(0)
    model = changekit.build_model(ARCH)
    if variant == "autograd":
        model.image_encoder.frozen = False
        for p in model.image_encoder.parameters():
            p.requires_grad_(True)
    trainable = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("image_encoder.")]
    opt = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=1e-4)
    g = torch.Generator().manual_seed(1)
    t1, t2 = torch.randn(batch, 3, size, size, generator=g), torch.randn(batch, 3, size, size, generator=g)
    label = torch.randint(0, 2, (batch, size, size), generator=g)

    def step() -> None:
        if mode == "train":
            loss = F.cross_entropy(model(t1, t2), label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            model(t1, t2)

    model.train(mode == "train")
    return step


def memory_worker(variant: str, mode: str, size: int, batch: int, warmup: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    step = _setup(variant, mode, size, batch)
    gc.collect()
    base = status_kib("VmRSS")
    reset = reset_peak()
    for _ in range(max(1, warmup)):
        step()
    peak = status_kib("VmHWM")
    return {"variant": variant, "mode": mode, "peak_mib": (peak - base) / 1024 if reset else peak / 1024,
            "peak_is_delta": reset}


def speed_worker(mode: str, size: int, batch: int, warmup: int, iters: int, threads: int) -> dict:
    import statistics

    import torch

    torch.set_num_threads(threads)
    steps = {v: _setup(v, mode, size, batch) for v in ("frozen", "autograd")}
    times: dict[str, list[float]] = {v: [] for v in steps}
    for i in range(warmup + iters):
        for v, step in steps.items():
            start = time.perf_counter()
            step()
            if i >= warmup:
                times[v].append(time.perf_counter() - start)
    return {v: {"s_per_iter": statistics.median(t), "pairs_per_s": batch / statistics.median(t)} for v, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        kind, *rest = args.worker
        if kind == "memory":
            res = memory_worker(rest[0], rest[1], args.size, args.batch, args.warmup, args.threads)
        else:
            res = speed_worker(rest[0], args.size, args.batch, args.warmup, args.iters, args.threads)
        print(json.dumps(res))
        return 0

    def run(*worker: str) -> dict:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", *worker, "--size", str(args.size), "--batch",
               str(args.batch), "--warmup", str(args.warmup), "--iters", str(args.iters), "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-2000:], file=sys.stderr)
            raise SystemExit(1)
        return json.loads(out.stdout.strip().splitlines()[-1])

    rows = []
    for mode in ("train", "inference"):
        speed = run("speed", mode)
        for variant in ("frozen", "autograd"):
            mem = run("memory", variant, mode)
            rows.append({**mem, **speed[variant]})
    print(f"BAN {ARCH}, {args.size}x{args.size}, batch {args.batch}, {args.threads} CPU threads, "
          f"median of {args.iters} interleaved timed calls after {args.warmup} warm-up")
    print(f"{'case':<12}{'FM':<14}{'pairs/s':>10}{'s/iter':>10}{'peak MiB':>11}")
    for r in rows:
        fm = "frozen" if r["variant"] == "frozen" else "autograd on"
        print(f"{r['mode']:<12}{fm:<14}{r['pairs_per_s']:>10.3f}{r['s_per_iter']:>10.2f}{r['peak_mib']:>11.0f}")
    by = {(r["mode"], r["variant"]): r for r in rows}
    for mode in ("train", "inference"):
        f, a = by[(mode, "frozen")], by[(mode, "autograd")]
        print(f"{mode}: the frozen FM gives {f['pairs_per_s'] / a['pairs_per_s']:.2f}x the throughput and "
              f"{f['peak_mib'] / max(a['peak_mib'], 1e-9):.2f}x the peak memory of the FM with autograd on")
    if not rows[0]["peak_is_delta"]:
        print("(peak memory is the absolute VmHWM: /proc/self/clear_refs was not writable)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
