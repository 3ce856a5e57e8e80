"""Peak memory of `changekit scene` does not grow with the scene: 4k x 4k vs 16k x 16k synthetic scenes.

Each scene pair is generated block by block, then run through `run_scene` (window 512, overlap 128,
batch 4, a tiny difference model so that it finishes in minutes) in a fresh subprocess whose peak
resident set size (VmHWM from /proc/self/status) is reported. Everything is included: reading,
inference, blending, strip files, the final GeoTIFFs and the polygons.

    .venv/bin/python benchmarks/scene_memory.py [--sizes 4096,16384] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

# the scene pipeline's test fixtures (a fast synthetic pair, a difference detector) live in tests/helpers/toys.py
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def child(t1: str, t2: str, out: str, window: int, overlap: int, batch: int) -> None:
    import torch
    from helpers.toys import DiffModel

    from changekit.geo.scene import run_scene

    torch.set_num_threads(2)
    s = run_scene(t1, t2, out, model=DiffModel(), mean=[0.0] * 3, std=[255.0] * 3, scale="none", window=window,
                  overlap=overlap, batch_size=batch, progress=False, restart=True)
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    s["vmhwm_mb"] = int(status["VmHWM"].split()[0]) / 1024
    s["vmrss_mb"] = int(status["VmRSS"].split()[0]) / 1024
    print("RESULT " + json.dumps(s, default=str))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="4096,16384")
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--overlap", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workdir", default=None)
    p.add_argument("--keep", action="store_true", help="keep the generated scenes")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args()
    from proc_memory import run_child

    if a.child:
        child(*a.child, a.window, a.overlap, a.batch_size)
        return 0
    from helpers.toys import write_scene_pair

    work = Path(a.workdir or tempfile.mkdtemp(prefix="scene_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in (int(s) for s in a.sizes.split(",")):
        t1, t2 = work / f"t1_{n}.tif", work / f"t2_{n}.tif"
        if not (t1.exists() and t2.exists()):
            t0 = time.perf_counter()
            write_scene_pair(t1, t2, size=(n, n), seed=0)
            print(f"generated {n} x {n} pair in {time.perf_counter() - t0:.0f} s", flush=True)
        cmd = [sys.executable, __file__, "--child", str(t1), str(t2), str(work / f"out_{n}"), "--window", str(a.window),
               "--overlap", str(a.overlap), "--batch-size", str(a.batch_size)]
        s = run_child(cmd)
        if s is None:
            return 1
        rows.append((n, s))
        print(f"ran {n} x {n}: {s['seconds']:.0f} s, peak RSS {s['vmhwm_mb']:.0f} MB", flush=True)
    base = rows[0][1]["vmhwm_mb"]
    print()
    print(f"{'scene':>13} {'Mpx':>6} {'windows':>8} {'seconds':>8} {'MP/s':>6} {'polygons':>9} {'peak RSS MB':>12} {'vs first':>9}")
    for n, s in rows:
        print(f"{n:>6} x {n:<6} {n * n / 1e6:>6.0f} {s['windows']:>8} {s['seconds']:>8.0f} {s['megapixels_per_s']:>6.2f} "
              f"{s.get('polygons', 0):>9} {s['vmhwm_mb']:>12.0f} {s['vmhwm_mb'] / base - 1:>+9.1%}")
    worst = max(abs(s["vmhwm_mb"] / base - 1) for _, s in rows)
    print(f"\npeak RSS spread {worst:.1%} ({'within' if worst <= 0.10 else 'OVER'} the 10 % target)")
    if not a.keep and not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if worst <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
