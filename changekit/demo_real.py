"""The demo's real-imagery step: changekit's shipped Sentinel-2 model on real OSCD city pairs vendored in the
package (``changekit/demo_data/oscd``: paris, one of the project's held-out cities, with its change map, and a
window of Las Vegas, an official test city, for the picture of urban growth).

Each city goes through ``changekit scene`` as a user's own download would (two folders of per-band L1C files;
the bands are found by name and stacked on the 10 m grid), into ``<out>/<city>/`` (``changekit view`` shows it on
a map). For a labelled city the change-class scores against its map are printed; ``figure_sentinel2.png`` shows
each city's dates in true colour, the ground truth where there is one, and the detected changes.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEMO_DATA", "DEMO_MODEL", "run_real_imagery"]

DEMO_DATA = Path(__file__).resolve().parent / "demo_data" / "oscd"
#: the shipped model the demo runs
DEMO_MODEL = "s2-urban-13band"


def _scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Change-class scores of a change map (0/1, 255 no data) against a 0/1 truth, as `changekit test` computes
    them (undefined values count as 0)."""
    import torch

    from changekit.metrics import confusion_matrix, metrics_from_confusion

    truth = torch.from_numpy(np.where(pred == 255, 255, gt).astype(np.int64))  # no-data pixels are not scored
    m = metrics_from_confusion(confusion_matrix(torch.from_numpy(np.where(pred == 1, 1, 0)), truth, 2))
    return {k: float(np.nan_to_num(m[k])) for k in ("precision", "recall", "f1", "iou")}


def _true_colour(folder: Path) -> np.ndarray:
    """B04, B03, B02 of a date folder, stretched over its 2..98th percentiles to 0..1."""
    from changekit.data.sentinel2 import read_band_stack

    rgb = read_band_stack(folder, ["B04", "B03", "B02"]).astype(np.float32)
    lo, hi = np.percentile(rgb.reshape(-1, 3), [2, 98], axis=0)  # per band: blue haze would tint a joint stretch
    return np.clip((rgb - lo) / np.maximum(hi - lo, 1.0), 0, 1)


def run_real_imagery(out: str | Path, model: str = DEMO_MODEL, progress: bool = True,
                     data: str | Path = DEMO_DATA) -> dict[str, Any]:
    """Run ``model`` over every vendored city; returns ``{city: {seconds, changed_pixels, [f1 ...]}}`` and writes
    ``<out>/<city>/`` scene outputs and ``<out>/figure_sentinel2.png``."""
    import rasterio

    from changekit.data.io import read_label
    from changekit.geo.scene import run_scene
    from changekit.models.pretrained import pretrained_path

    out, data = Path(out), Path(data)
    ckpt = pretrained_path(model)
    results: dict[str, Any] = {}
    rows = []
    for city_dir in sorted(p for p in data.iterdir() if p.is_dir()):
        city = city_dir.name
        t0 = time.time()
        with warnings.catch_warnings():  # OSCD's band files do not all name their product level; these are L1C
            warnings.filterwarnings("ignore", message=".*product level is unknown.*")
            s = run_scene(city_dir / "imgs_1", city_dir / "imgs_2", out / city, ckpt=ckpt, progress=progress,
                          precision="fp32",  # the printed F1 is the model card's on every CPU
                          window=512, overlap=64)
        with rasterio.open(out / city / "change.tif") as ds:
            pred = ds.read(1)
        res: dict[str, Any] = {"seconds": round(time.time() - t0, 1), "changed_pixels": int(s["changed_pixels"]),
                               "valid_pixels": int(s["valid_pixels"]),
                               "threshold": json.loads((out / city / "scene.json").read_text())["threshold"]}
        cm = city_dir / "cm" / f"{city}-cm.tif"
        gt = None
        if cm.is_file():
            raw = read_label(cm)
            gt = raw == 2  # OSCD's files: 1 no change, 2 change
            res.update(_scores(pred, gt))
        results[city] = res
        rows.append((city, _true_colour(city_dir / "imgs_1"), _true_colour(city_dir / "imgs_2"), gt, pred == 1))
    _figure(out / "figure_sentinel2.png", rows, model)
    return results


def _figure(path: Path, rows: list, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 4, figsize=(16, 4.2 * len(rows)), squeeze=False)
    for r, (city, a, b, gt, pred) in enumerate(rows):
        overlay = b.copy()
        overlay[pred] = 0.35 * overlay[pred] + 0.65 * np.array([1.0, 0.1, 0.1])
        panels = [(a, "date 1"), (b, "date 2"),
                  (gt if gt is not None else np.zeros(pred.shape), "ground truth" if gt is not None else
                   "no public labels (OSCD test city)"),
                  (overlay, f"detected change ({model})")]
        for c, (img, title) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"{city}: {title}", fontsize=10)
            ax.axis("off")
    fig.suptitle("Sentinel-2 L1C (OSCD; contains modified Copernicus Sentinel data), 10 m", fontsize=12)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
