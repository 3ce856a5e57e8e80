"""`changekit timeline` on CPU: throughput per pair against `changekit scene` on the same pair, and peak memory as
the number of dates grows (it should stay flat: pairs run one after another and the combination reads one block of
every pair at a time).

A synthetic series (:func:`changekit.data.synthetic.write_date_series`: buildings built, demolished and rebuilt,
seasons) of ``--size``² pixels is generated once; then, each in a fresh process, a scene over dates 1->2 and
timelines over the first N dates for every N of ``--dates``. The model is FC-Siam-diff with random weights
(throughput does not depend on them).

    .venv/bin/python benchmarks/timeline_throughput.py [--size 4096] [--dates 2,8,32] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _child(a) -> None:
    """One measured run in this process: RESULT {json} with the run's seconds, MP/s per pair and peak RSS."""
    import torch
    from proc_memory import reset_peak, status_kib

    from changekit import build_model

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = build_model("fc_siam_diff", base_channel=a.base_channel).eval()
    kw = dict(model=model, mean=[127.5] * 3, std=[64.0] * 3, input_range=[0, 255], window=a.window,
              overlap=a.overlap, batch_size=a.batch_size, progress=False)
    dates = json.loads(a.child)
    reset_peak()
    t0 = time.perf_counter()
    if a.scene:
        from changekit.geo.scene import run_scene

        run_scene(dates[0], dates[1], a.out, **kw)  # with its polygons, as a timeline writes its own
    else:
        from changekit.geo.timeline import run_timeline

        run_timeline(dates, a.out, log=lambda *_: None, **kw)
    seconds = time.perf_counter() - t0
    print("RESULT " + json.dumps({"seconds": seconds, "vmhwm_mb": status_kib("VmHWM") / 1024}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--dates", default="2,8,32", help="the series lengths N to run (comma-separated)")
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--overlap", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--base-channel", type=int, default=8, help="FC-Siam-diff width (16 is the paper's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", help="keep the series here (reused when present)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--scene", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    from proc_memory import run_child

    if a.child:
        _child(a)
        return 0
    from changekit.data.synthetic import write_date_series

    ns = [int(v) for v in a.dates.split(",")]
    work = Path(a.workdir or tempfile.mkdtemp(prefix="ck-timeline-bench-"))
    t0 = time.perf_counter()
    paths = sorted(work.glob("date*.tif"))
    if len(paths) < max(ns):
        paths, _ = write_date_series(work, max(ns), (a.size, a.size), seed=0, n_buildings=400)
        print(f"generated {max(ns)} dates of {a.size} x {a.size} in {time.perf_counter() - t0:.0f} s", flush=True)
    mp = a.size * a.size / 1e6
    rows = []
    for n, scene in [(2, True)] + [(n, False) for n in ns]:
        out = work / f"out_{'scene' if scene else n}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, __file__, "--child", json.dumps([str(q) for q in paths[:n]]), "--out", str(out),
               "--window", str(a.window), "--overlap", str(a.overlap), "--batch-size", str(a.batch_size),
               "--base-channel", str(a.base_channel), "--threads", str(a.threads)] + (["--scene"] if scene else [])
        r = run_child(cmd)
        if r is None:
            return 1
        rows.append(("scene 1->2" if scene else f"timeline N={n}", n, r))
        print(f"ran {rows[-1][0]}: {r['seconds']:.0f} s, peak RSS {r['vmhwm_mb']:.0f} MB", flush=True)
    scene_mps = mp / rows[0][2]["seconds"]
    print(f"\n{'run':<16} {'pairs':>5} {'seconds':>8} {'MP/s per pair':>14} {'vs scene':>9} {'peak RSS MB':>12}")
    # a timeline's MP/s per pair counts its whole run (pairs, combination, polygons) against the pairs' pixels
    for name, n, r in rows:
        pairs = max(1, n - 1)
        mps = mp * pairs / r["seconds"]
        print(f"{name:<16} {pairs:>5} {r['seconds']:>8.1f} {mps:>14.2f} {mps / scene_mps:>9.2f} {r['vmhwm_mb']:>12.0f}")
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
