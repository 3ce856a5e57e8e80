"""CPU throughput and peak memory of the baseline change detectors (BiT-R18, ChangeFormer MiT-b0/b1).

    .venv/bin/python benchmarks/baselines.py                       # 256 and 512, all three models
    .venv/bin/python benchmarks/baselines.py --sizes 256 --iters 5 --threads 4 --models changeformer_mit-b0

For every model and input size two cases run, each in a fresh subprocess so that its peak memory is its own:

* **forward**: ``model.eval()`` under ``torch.inference_mode()``, one batch of pairs per call;
* **train step**: ``model.train()``, forward + cross-entropy on random labels + backward + AdamW step.

Throughput is pairs per second over ``--iters`` timed calls after ``--warmup`` untimed ones. Memory is the
process's peak resident set (``VmHWM`` in ``/proc/self/status``), reset after the model is built
(``/proc/self/clear_refs`` = 5) and reported as the increase over the resident set at that point, i.e. the
activations, gradients and optimiser state the case needs on top of the model's weights.
Models not registered (yet) are skipped with a note.
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

DEFAULT_MODELS = ["bit_r18", "changeformer_mit-b0", "changeformer_mit-b1"]


def worker(name: str, size: int, mode: str, batch: int, warmup: int, iters: int, threads: int) -> dict:
    import torch
    import torch.nn.functional as F

    import changekit

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = changekit.build_model(name)
    c = getattr(model, "in_channels", 3)
    t1, t2 = torch.randn(batch, c, size, size), torch.randn(batch, c, size, size)
    label = torch.randint(0, getattr(model, "num_classes", 2), (batch, size, size))
    if mode == "forward":
        model.eval()

        def step() -> None:
            with torch.inference_mode():
                model(t1, t2)

    else:
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step() -> None:
            loss = F.cross_entropy(model(t1, t2), label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    gc.collect()
    reset = reset_peak()
    base = status_kib("VmRSS")
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    dt = time.perf_counter() - t0
    peak = status_kib("VmHWM")
    return {
        "model": name,
        "size": size,
        "mode": mode,
        "pairs_per_s": batch * iters / dt,
        "s_per_call": dt / iters,
        "peak_rss_mib": peak / 1024,
        "delta_mib": (peak - base) / 1024 if reset else float("nan"),
        "params": sum(p.numel() for p in model.parameters()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    p.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    p.add_argument("--modes", nargs="+", choices=["forward", "train"], default=["forward", "train"])
    p.add_argument("--batch", type=int, default=1, help="pairs per call (default 1)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch intra-op threads")
    p.add_argument("--json", action="store_true", help="print one JSON line per case instead of a table")
    p.add_argument("--worker", nargs=3, metavar=("MODEL", "SIZE", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        name, size, mode = args.worker
        print(json.dumps(worker(name, int(size), mode, args.batch, args.warmup, args.iters, args.threads)))
        return 0

    import changekit

    registered = set(changekit.list_models())
    rows, notes = [], []
    for name in args.models:
        if name not in registered:
            notes.append(f"{name}: not registered in this checkout, skipped")
            continue
        for size in args.sizes:
            for mode in args.modes:
                cmd = [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--worker",
                    name,
                    str(size),
                    mode,
                    "--batch",
                    str(args.batch),
                    "--warmup",
                    str(args.warmup),
                    "--iters",
                    str(args.iters),
                    "--threads",
                    str(args.threads),
                ]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    notes.append(f"{name} {size} {mode}: failed ({proc.stderr.strip().splitlines()[-1:]})")
                    continue
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append(row)
                if args.json:
                    print(json.dumps(row), flush=True)
    if not args.json:
        _print_table(rows, args)
    for n in notes:
        print("note:", n)
    return 0


def _print_table(rows: list[dict], args: argparse.Namespace) -> None:
    import platform

    import torch
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"CPU, torch {torch.__version__}, {args.threads} thread(s), batch {args.batch} pair(s), "
        f"{args.iters} timed calls after {args.warmup} warm-up ({platform.processor() or platform.machine()})",
        title_justify="left",
    )
    for col, just in [
        ("model", "left"),
        ("size", "right"),
        ("case", "left"),
        ("pairs/s", "right"),
        ("s/call", "right"),
        ("peak RSS MiB", "right"),
        ("+ over model MiB", "right"),
    ]:
        table.add_column(col, justify=just)
    for r in rows:
        table.add_row(
            r["model"],
            str(r["size"]),
            "forward" if r["mode"] == "forward" else "train step",
            f"{r['pairs_per_s']:.2f}",
            f"{r['s_per_call']:.3f}",
            f"{r['peak_rss_mib']:.0f}",
            f"{r['delta_mib']:.0f}",
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    sys.exit(main())
