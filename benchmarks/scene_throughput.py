"""`changekit scene` throughput on CPU for the demo model (FC-Siam-diff), with and without overlap; a single-date
segmentation model (``--model mcat-unet_segnext-s``) runs over date 1 alone, as ``scene --image``.

A synthetic georeferenced pair is generated once; each setting runs the full pipeline (read, scale,
model, blend, strip files, GeoTIFFs, polygons) and reports megapixels of scene per second of wall time,
plus the model's own share. Weights are random: throughput does not depend on them.

    .venv/bin/python benchmarks/scene_throughput.py [--size 2048] [--overlaps 0,128,256] [--threads 2]
        [--model ban_vit-b16-clip_mit-b0] [--precisions fp32,bf16,int8,auto]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

# the scene pipeline's test fixtures (a fast synthetic pair, a difference detector) live in tests/helpers/toys.py
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch


class Timed(torch.nn.Module):
    """Wraps a model and adds up the seconds spent in its forward passes. Every other attribute is the model's (its
    task and channels, and what optimize_for_inference reads: fast_precisions, inference_channels_last,
    fuse_for_inference), as on changekit's own InferenceModel."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.seconds = model, 0.0

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)

    def forward(self, *images):
        t0 = time.perf_counter()
        out = self.model(*images)
        self.seconds += time.perf_counter() - t0
        return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="fc_siam_diff")
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--overlaps", default="0,128,256")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precisions", default="fp32", help="comma-separated: fp32, bf16, fp16, int8, auto (scene --precision)")
    a = p.parse_args()
    from helpers.toys import write_scene_pair

    from changekit import build_model
    from changekit.geo.scene import run_scene

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="scene_tp_"))
    try:
        write_scene_pair(work / "t1.tif", work / "t2.tif", size=(a.size, a.size), seed=0)
        rows = []
        for prec in a.precisions.split(","):
            model = Timed(build_model(a.model).eval())  # a fresh model: bf16 casts the weights in place
            for ov in (int(v) for v in a.overlaps.split(",")):
                model.seconds = 0.0
                cpu0 = time.process_time()
                t2 = None if model.task == "segmentation" else work / "t2.tif"
                s = run_scene(work / "t1.tif", t2, work / f"out_{prec}_{ov}", model=model,
                              mean="imagenet", std="imagenet", scale="none", window=a.window, overlap=ov,
                              batch_size=a.batch_size, device=a.device, progress=False, precision=prec)
                rows.append((s["precision"], ov, s, model.seconds, time.process_time() - cpu0))
                print(f"{s['precision']} overlap {ov}: {s['seconds']:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mpx = a.size * a.size / 1e6
    print(f"\n{a.model}, {a.size} x {a.size} px ({mpx:.1f} Mpx), window {a.window}, batch {a.batch_size}, "
          f"{a.device}, {torch.get_num_threads()} threads")
    print(f"{'prec':>5} {'overlap':>8} {'windows':>8} {'px seen/px':>10} {'wall s':>8} {'MP/s':>7} {'model s':>8} {'model %':>8} "
          f"{'MP/s model only':>16} {'CPU s':>7} {'MP per CPU-s':>13}")
    for prec, ov, s, ms, cpu in rows:
        seen = s["windows"] * min(a.window, a.size) ** 2 / (a.size * a.size)
        print(f"{prec:>5} {ov:>8} {s['windows']:>8} {seen:>10.2f} {s['seconds']:>8.1f} {mpx / s['seconds']:>7.2f} {ms:>8.1f} "
              f"{ms / s['seconds']:>8.0%} {mpx / ms:>16.2f} {cpu:>7.0f} {mpx / cpu:>13.3f}")
    print("(MP per CPU-second is the figure to compare on a shared machine: wall time includes waiting for cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
