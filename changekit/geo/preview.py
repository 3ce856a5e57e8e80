"""PNG previews of scene outputs: a date decimated to a screen-sized image with the change raster over it, or an
image beside its class raster."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from changekit.data.io import write_png

__all__ = ["preview_png", "class_preview_png"]


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
    write_png(out_png, np.clip(rgb, 0, 255).astype(np.uint8))
    return Path(out_png)


def class_preview_png(image: str | Path, classes: str | Path, out_png: str | Path, palette, max_side: int = 1200,
                      label: str | Path | None = None) -> Path:
    """A PNG of ``image`` (decimated, 2-98 % stretch) beside the class raster in ``palette`` colours (and, with
    ``label``, the true classes as a third panel); nearest decimation keeps the classes. Any scene size."""
    import rasterio
    from rasterio.enums import Resampling

    colours = np.zeros((256, 3), np.uint8)
    colours[: len(palette)] = np.asarray(palette, np.uint8)
    colours[255] = 40  # no data
    with rasterio.open(classes) as c:
        f = max(1, int(np.ceil(max(c.height, c.width) / max_side)))
        shape = (max(1, c.height // f), max(1, c.width // f))
        panels = [colours[c.read(1, out_shape=shape, resampling=Resampling.nearest)]]
    with rasterio.open(image) as src:
        idx = [1, 2, 3] if src.count >= 3 else [1, 1, 1]
        img = src.read(idx, out_shape=(3,) + shape, resampling=Resampling.average if f > 1 else Resampling.nearest,
                       out_dtype="float32")
        valid = src.read_masks(idx, out_shape=(3,) + shape).min(axis=0) > 0
    panels.insert(0, np.transpose(_stretch(img, valid), (1, 2, 0)))
    if label is not None:
        with rasterio.open(label) as lab:
            panels.append(colours[lab.read(1, out_shape=shape, resampling=Resampling.nearest)])
    gap = np.full((shape[0], 8, 3), 255, np.uint8)
    row = [panels[0]]
    for p in panels[1:]:
        row += [gap, p]
    write_png(out_png, np.concatenate(row, axis=1))
    return Path(out_png)
