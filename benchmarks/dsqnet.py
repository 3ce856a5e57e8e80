"""DSQNet (Swin-T, ViTAEv2-S): parameters, FLOPs, CPU throughput and peak memory.

    .venv/bin/python benchmarks/dsqnet.py                         # 512, both models, forward + train step
    .venv/bin/python benchmarks/dsqnet.py --sizes 256 512 --iters 3 --threads 4 --device cuda

For every model and size, two cases run, each in a fresh subprocess so that its peak memory is its own:
**forward** (``eval()`` under ``inference_mode``) and **train step** (forward at 1/4, OHEM cross-entropy as the
configs use, backward, AdamW step). Throughput is pairs per second over ``--iters`` timed calls after
``--warmup`` untimed ones. CPU memory is the increase of the process's peak resident set (``VmHWM``) over the
resident set after the model was built; on CUDA it is ``torch.cuda.max_memory_allocated``.
FLOPs: ``changekit.models.summary.count_flops`` (torch ``FlopCounterMode`` / 2, i.e. one multiply-add = 1 FLOP; convolutions,
matmuls and attention, both dates; RoIAlign / grid_sample are not counted).
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

MODELS = ["dsqnet_swin-t", "dsqnet_vitaev2-s", "dsqnet-cx_swin-t", "dsqnet-cx_vitaev2-s"]


def worker(name: str, size: int, mode: str, batch: int, warmup: int, iters: int, threads: int, device: str) -> dict:
    import torch

    import changekit
    from changekit.engine.losses import ChangeLoss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = changekit.build_model(name).to(device)
    t1 = torch.randn(batch, 3, size, size, device=device)
    t2 = torch.randn(batch, 3, size, size, device=device)
    label = torch.randint(0, 2, (batch, size, size), device=device)
    if mode.startswith("forward"):
        model.eval()
        if mode == "forward-bf16":  # the inference API: bf16 weights under autocast (fp32 with a warning elsewhere)
            model = changekit.optimize_for_inference(model, precision="bf16")

        def step() -> None:
            with torch.inference_mode():
                model(t1, t2)
    else:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)

        def step() -> None:
            loss = ChangeLoss({"ohem": {"thresh": 0.7, "min_kept": 100000}})(model.forward_decoder(t1, t2), label)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    gc.collect()
    reset = reset_peak()
    base = status_kib("VmRSS")
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    dt = time.perf_counter() - t0
    if device.startswith("cuda"):
        mem = torch.cuda.max_memory_allocated() / 2**20
    else:
        mem = (status_kib("VmHWM") - base) / 1024 if reset else float("nan")
    return {"model": name, "size": size, "mode": mode, "pairs_per_s": batch * iters / dt, "s_per_call": dt / iters,
            "mem_mib": mem}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--sizes", nargs="+", type=int, default=[512])
    p.add_argument("--modes", nargs="+", choices=["forward", "forward-bf16", "train"],
                   default=["forward", "forward-bf16", "train"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-flops", action="store_true", help="skip the parameter / FLOP lines")
    p.add_argument("--worker", nargs=3, metavar=("MODEL", "SIZE", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        name, size, mode = args.worker
        print(json.dumps(worker(name, int(size), mode, args.batch, args.warmup, args.iters, args.threads, args.device)))
        return 0

    import torch

    import changekit
    from changekit.models.summary import count_flops

    torch.set_num_threads(args.threads)
    if not args.no_flops:
        print(f"{'model':18} {'params':>12} " + " ".join(f"{'GFLOPs@' + str(s):>12}" for s in args.sizes))
        for name in args.models:
            m = changekit.build_model(name)
            n = sum(q.numel() for q in m.parameters())
            flops = [count_flops(m, (s, s))[0] / 1e9 for s in args.sizes]
            print(f"{name:18} {n:>12,d} " + " ".join(f"{f:>12.2f}" for f in flops), flush=True)
        print()
    print(f"{args.device}, torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, "
          f"{args.iters} timed calls after {args.warmup} warm-up")
    print(f"{'model':18} {'size':>5} {'case':11} {'pairs/s':>9} {'s/call':>8} {'+MiB':>8}")
    for name in args.models:
        for size in args.sizes:
            for mode in args.modes:
                cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, str(size), mode, "--batch",
                       str(args.batch), "--warmup", str(args.warmup), "--iters", str(args.iters), "--threads",
                       str(args.threads), "--device", args.device]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"{name:18} {size:>5} {mode:11} failed: {proc.stderr.strip().splitlines()[-1:]}")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                case = "train step" if mode == "train" else mode.replace("-", " ")
                print(f"{name:18} {size:>5} {case:11} {r['pairs_per_s']:>9.3f} {r['s_per_call']:>8.2f} {r['mem_mib']:>8.0f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
