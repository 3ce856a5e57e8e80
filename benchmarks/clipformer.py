"""CLIPFormer (Swin-T + CLIP ViT-B/16 text tower): parameters per part, FLOPs, throughput and peak memory.

    .venv/bin/python benchmarks/clipformer.py                       # 256, forward + train step, CPU
    .venv/bin/python benchmarks/clipformer.py --sizes 256 512 --iters 3 --threads 4 --device cuda

Parameters are counted per top-level module (the table ``changekit info`` prints, with the learnable context
and γ listed apart). FLOPs: ``changekit.models.summary.count_flops`` (torch ``FlopCounterMode`` / 2, one multiply-add =
1 FLOP; convolutions, matmuls and attention, both dates, both prompts of both dates through the text tower).
Each speed case runs in a fresh subprocess so that its peak memory is its own: **forward** (``eval()`` under
``inference_mode``, prompts with the fallback class list) and **train step** (forward, cross-entropy on the
upsampled logits, backward, AdamW step). Throughput is pairs per second over ``--iters`` timed calls after
``--warmup`` untimed ones; CPU memory is the rise of the peak resident set (``VmHWM``) over the resident set
after building the model, CUDA memory ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from proc_memory import reset_peak, status_kib  # benchmarks/ is on sys.path when a script runs

ARCH = "clipformer_swin-t_vit-b16"


def worker(size: int, mode: str, batch: int, warmup: int, iters: int, threads: int, device: str) -> dict:
    import torch
    import torch.nn.functional as F

    import changekit

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = changekit.build_model(ARCH).to(device)
    t1 = torch.randn(batch, 3, size, size, device=device)
    t2 = torch.randn(batch, 3, size, size, device=device)
    label = torch.randint(0, 2, (batch, size, size), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01) if mode == "train" else None
    model.train(mode == "train")
    if mode == "forward-bf16":  # the inference API: bf16 weights under autocast (fp32 with a warning elsewhere)
        model = changekit.optimize_for_inference(model, precision="bf16")

    def step() -> None:
        if mode.startswith("forward"):
            with torch.inference_mode():
                model(t1, t2)
        else:
            loss = F.cross_entropy(model(t1, t2), label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = status_kib("VmRSS")
    reset_peak()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    dt = (time.perf_counter() - t) / iters
    mem = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else max(0, status_kib("VmHWM") - base) / 1024
    return {"size": size, "mode": mode, "batch": batch, "sec_per_iter": dt, "pairs_per_s": batch / dt, "mem_mib": mem}


def sizes_table(size: int) -> None:
    import torch

    from changekit.models.clipformer import CLIPFormer
    from changekit.models.summary import count_flops

    torch.manual_seed(0)
    model = CLIPFormer()
    flops, per_module = count_flops(model, (size, size))
    total = sum(p.numel() for p in model.parameters())
    print(f"CLIPFormer Swin-T / ViT-B-16 text tower, {size}x{size} pair")
    print(f"{'part':<18}{'params':>14}{'GFLOPs':>10}")
    for name, child in model.named_children():
        n = sum(p.numel() for p in child.parameters())
        print(f"{name:<18}{n:>14,}{per_module.get(name, 0) / 1e9:>10.2f}")
    own = sum(p.numel() for p in model.parameters(recurse=False))
    print(f"{'contexts + gamma':<18}{own:>14,}{'':>10}")
    print(f"{'total':<18}{total:>14,}{flops / 1e9:>10.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[256])
    p.add_argument("--modes", nargs="+", default=["forward", "forward-bf16", "train"], choices=["forward", "forward-bf16", "train"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-flops", action="store_true")
    p.add_argument("--worker", nargs=2, metavar=("SIZE", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        res = worker(int(args.worker[0]), args.worker[1], args.batch, args.warmup, args.iters, args.threads, args.device)
        print(json.dumps(res))
        return 0
    if not args.no_flops:
        for s in args.sizes:
            sizes_table(s)
            print()
    print(f"{'size':>5} {'case':<10} {'batch':>5} {'s/iter':>8} {'pairs/s':>8} {'peak MiB':>9}   ({args.device}, {args.threads} threads)")
    for s in args.sizes:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--worker", str(s), mode, "--batch", str(args.batch), "--warmup",
                   str(args.warmup), "--iters", str(args.iters), "--threads", str(args.threads), "--device", args.device]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{s:>5} {mode:<10} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{s:>5} {mode:<10} {r['batch']:>5} {r['sec_per_iter']:>8.2f} {r['pairs_per_s']:>8.2f} {r['mem_mib']:>9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
