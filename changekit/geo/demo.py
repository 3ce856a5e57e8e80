"""The demo's last step (a synthetic georeferenced scene through ``changekit scene``) and PNG previews."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["demo_scene", "demo_step", "preview_png"]


def _stretch(a: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.zeros(a.shape, np.uint8)
    for c in range(a.shape[0]):
        v = a[c][valid]
        if v.size == 0:
            continue
        lo, hi = np.percentile(v, [2, 98])
        out[c] = np.clip((a[c] - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8)
    return out


def _read_max_decimated(ds, f: int, shape: tuple[int, int]) -> np.ndarray:
    """Band 1 of a 0/1/255 change raster reduced by ``f`` with a max filter (change wins over no change, both
    over nodata 255), one strip of ``f`` rows at a time so memory stays bounded. GDAL offers no max resampling
    for plain reads."""
    from rasterio.windows import Window

    h, w = shape
    out = np.empty(shape, np.uint8)
    for r in range(h):
        block = ds.read(1, window=Window(0, r * f, w * f, f)).astype(np.int16)
        block[block == 255] = -1
        row = block.reshape(f, w, f).max(axis=(0, 2))
        out[r] = np.where(row < 0, 255, row)
    return out


def preview_png(image: str | Path, change: str | Path, out_png: str | Path, bands: list[int] | None = None,
                max_side: int = 1600, label: str | Path | None = None, label_value: int = 1) -> Path:
    """A PNG of ``image`` (decimated to ``max_side``, 2-98 % stretch) with the change raster over it in red.

    With ``label`` (changed pixels = ``label_value``), missed changes are drawn in cyan next to the predicted ones.
    Reads are decimated, so this works on scenes of any size.
    """
    import rasterio
    from PIL import Image
    from rasterio.enums import Resampling

    with rasterio.open(change) as c:
        f = max(1, int(np.ceil(max(c.height, c.width) / max_side)))
        shape = (max(1, c.height // f), max(1, c.width // f))
        ch = _read_max_decimated(c, f, shape) if f > 1 else c.read(1, out_shape=shape)
    with rasterio.open(image) as src:
        idx = bands or ([1, 2, 3] if src.count >= 3 else [1, 1, 1])
        img = src.read(idx, out_shape=(len(idx),) + shape, resampling=Resampling.average if f > 1 else Resampling.nearest,
                       out_dtype="float32")
        valid = src.read_masks(idx, out_shape=(len(idx),) + shape).min(axis=0) > 0
    rgb = np.transpose(_stretch(img, valid), (1, 2, 0)).astype(np.float32)
    rgb = 0.75 * rgb  # dim the background a little so the overlay reads
    hit = ch == 1
    rgb[hit] = 0.35 * rgb[hit] + 0.65 * np.array([255, 30, 30])
    if label is not None:
        with rasterio.open(label) as lab:
            gt = lab.read(1, out_shape=shape, resampling=Resampling.nearest) == label_value
        miss = gt & ~hit
        rgb[miss] = 0.35 * rgb[miss] + 0.65 * np.array([0, 220, 255])
    rgb[ch == 255] = [40, 40, 40]
    out_png = Path(out_png)
    tmp = out_png.with_name(out_png.name + ".tmp.png")
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(tmp)
    tmp.replace(out_png)
    return out_png


def demo_scene(model_ckpt: Any, out_dir: str | Path, size: tuple[int, int] = (2048, 3072), seed: int = 7,
               window: int = 512, overlap: int = 128, batch_size: int = 4, device: str = "cpu",
               progress: bool = True, **scene_kwargs: Any) -> dict:
    """Synthetic georeferenced pair (``size`` px) -> ``changekit scene`` with the demo model -> outputs + preview.

    ``model_ckpt``: a changekit checkpoint path (mean/std recorded inside) or an ``nn.Module`` (then pass
    ``mean``/``std`` in ``scene_kwargs``). Writes, under ``out_dir``: ``t1.tif``, ``t2.tif``, ``label.tif``,
    ``change.tif``, ``probability.tif``, ``changes.geojson``, ``changes.gpkg`` and ``preview.png``.
    Returns the :func:`run_scene` summary plus ``preview``, ``inputs`` and, with a label, ``f1``.
    """
    import rasterio

    from changekit.geo.scene import run_scene

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t1, t2, lab = out / "t1.tif", out / "t2.tif", out / "label.tif"
    try:  # the data module's generator: the same distribution the demo model was trained on
        from changekit.data.synthetic import write_geotiff_pair

        write_geotiff_pair(t1, t2, lab, size=size, seed=seed)
    except ImportError:
        from changekit.geo.synthetic import write_scene_pair

        write_scene_pair(t1, t2, lab, size=size, seed=seed)
    kw: dict[str, Any] = dict(window=window, overlap=overlap, batch_size=batch_size, device=device, progress=progress)
    kw.update(scene_kwargs)
    if isinstance(model_ckpt, (str, Path)):
        summary = run_scene(t1, t2, out, ckpt=model_ckpt, **kw)
    else:
        summary = run_scene(t1, t2, out, model=model_ckpt, **kw)
    with rasterio.open(out / "change.tif") as c, rasterio.open(lab) as g:
        tp = fp = fn = 0
        for _, win in c.block_windows(1):
            p, y = c.read(1, window=win), g.read(1, window=win)
            ok = p != 255
            tp += int(((p == 1) & (y == 1) & ok).sum())
            fp += int(((p == 1) & (y == 0) & ok).sum())
            fn += int(((p == 0) & (y == 1) & ok).sum())
    summary["f1"] = 2 * tp / max(1, 2 * tp + fp + fn)
    summary["preview"] = str(preview_png(t2, out / "change.tif", out / "preview.png", label=lab))
    summary["inputs"] = {"t1": str(t1), "t2": str(t2), "label": str(lab)}
    return summary


def demo_step(ctx: Any) -> None:
    """A ``changekit.demo`` extra step: ``demo_scene(ctx.checkpoint, ctx.out / "scene")``; summary in ``ctx.extra``.

    Register with ``changekit.demo.EXTRA_STEPS.append(changekit.geo.demo.demo_step)``.
    """
    s = demo_scene(ctx.checkpoint, Path(ctx.out) / "scene")
    ctx.extra["scene"] = {k: s[k] for k in ("grid", "windows", "seconds", "megapixels_per_s", "changed_pixels",
                                            "polygons", "f1", "preview", "outputs") if k in s}
