"""`changekit scene` on ONNX Runtime against PyTorch (fp32, CPU): megapixels of scene per second of wall time.

For each model (random weights: speed does not depend on them) the script exports the graph at the window size,
then runs the same synthetic scene through `changekit scene` with the PyTorch model and with the .onnx file,
alternating the two `--repeats` times, and prints the median MP/s of each and their ratio. The change maps of
the two runs are compared too (they must agree on >= 99.99 % of the pixels).

    .venv/bin/python benchmarks/onnx_scene.py [--models fc_siam_diff,ban_vit-b16-clip_mit-b0] [--size 1024]
        [--window 512] [--overlap 128] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fast synthetic pair (tests/helpers/toys.py)

import numpy as np
import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="fc_siam_diff,ban_vit-b16-clip_mit-b0")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--overlap", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    import onnxruntime as ort
    import rasterio
    from helpers.toys import write_scene_pair

    from changekit import build_model
    from changekit.deploy import OnnxModel, export_onnx
    from changekit.geo.scene import run_scene

    torch.set_num_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix="onnx_scene_"))
    write_scene_pair(work / "t1.tif", work / "t2.tif", size=(a.size, a.size), seed=0)
    stats = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
    kw = dict(window=a.window, overlap=a.overlap, batch_size=1, progress=False, scale="none", restart=True, **stats)
    print(f"scene {a.size}x{a.size}, window {a.window}, overlap {a.overlap}, batch 1, {a.threads} threads, "
          f"onnxruntime {ort.__version__}, torch {torch.__version__}")
    print(f"{'model':28s} {'graph':>12s} {'PyTorch MP/s':>13s} {'ORT MP/s':>9s} {'ORT/PT':>7s} {'maps agree':>11s}")
    for name in a.models.split(","):
        torch.manual_seed(0)
        model = build_model(name).eval()
        t0 = time.perf_counter()
        meta = export_onnx(model, work / f"{name}.onnx", size=(a.window, a.window), info=stats)
        export_s = time.perf_counter() - t0
        onnx_model = OnnxModel(work / f"{name}.onnx", "cpu", stats)
        onnx_model.session.set_providers(["CPUExecutionProvider"])
        pt, rt = [], []
        for _ in range(a.repeats):
            for runner, out, times in ((model, "pt", pt), (onnx_model, "ort", rt)):
                s = run_scene(work / "t1.tif", work / "t2.tif", work / out, model=runner, **kw)
                times.append(s["megapixels_per_s"])
        with rasterio.open(work / "pt" / "change.tif") as x, rasterio.open(work / "ort" / "change.tif") as y:
            agree = float((x.read(1) == y.read(1)).mean())
        graph = "dynamic" if meta["dynamic_size"] else f"fixed {a.window}"
        mp, mr = statistics.median(pt), statistics.median(rt)
        print(f"{name:28s} {graph:>12s} {mp:13.4f} {mr:9.4f} {mr / mp:7.2f} {100 * agree:10.3f}%"
              f"   (export {export_s:.0f} s)")
        np.testing.assert_array_less(0.9999, agree + 1e-12)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
