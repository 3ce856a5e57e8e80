"""Strip files (the per-strip partial results) and the final rasters assembled from them.

A strip file holds strip ``i`` blended horizontally, ``(win_h, W, K)`` raw little-endian uint16 in row-major
order: ``K`` probabilities per pixel (1 for a change model: the change probability; one per class for a
segmentation model), each ``round(p * 65534)``, and :data:`NODATA16` where an input has no data. Strip files
are written under a temporary name and renamed when complete (:mod:`changekit.atomic`), so a strip file that exists is finished
(that is the resume record). The final rasters are computed from them in tile-aligned blocks:
``p(y, x) = sum_i ny_i(y) * P_i(y, x)`` over the strips covering row ``y``, in ascending strip order, so
the result does not depend on which process computed which strip or in which run. A change model's
blended probability is thresholded into ``change.tif``; a segmentation model's per-class probabilities are
blended the same way and their argmax is ``classes.tif`` (the blend of probabilities, not of class votes).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from changekit.atomic import atomic_write
from changekit.geo.windows import Grid

NODATA16 = 65535
QMAX = 65534
TILE = 512
CHANGE_NODATA = 255

__all__ = ["StripWriter", "strip_path", "assemble_rasters", "assemble_class_rasters", "raster_profile"]


def strip_path(partial: Path, i: int) -> Path:
    return partial / f"strip_{i:05d}.u16"


def strip_done(partial: Path, i: int, grid: Grid, channels: int = 1) -> bool:
    """Strip ``i`` is finished: its file is there at its full size. Strips appear whole (atomic renames), so a
    file of another size was damaged after the fact; the run computes that strip again."""
    p = strip_path(partial, i)
    return p.is_file() and p.stat().st_size == grid.win_h * grid.width * channels * 2


class StripWriter:
    """Writes column ranges of one strip straight to its file (no width-sized buffer in memory), through
    :func:`changekit.atomic.atomic_write`: the strip file appears on :meth:`commit`, never half-written."""

    def __init__(self, partial: Path, i: int, height: int, width: int, channels: int = 1) -> None:
        self.final = strip_path(partial, i)
        self.height, self.width, self.channels = height, width, channels
        self._stack = contextlib.ExitStack()
        self.tmp = self._stack.enter_context(atomic_write(self.final))
        self.fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.ftruncate(self.fd, height * width * channels * 2)

    def write(self, x0: int, prob: np.ndarray, valid: np.ndarray) -> None:
        """Columns ``x0..`` of the strip: ``prob`` (K, h, w) in 0..1 (or (h, w) when K is 1), ``valid`` (h, w)."""
        q = np.rint(np.clip(prob.reshape(-1, *valid.shape), 0.0, 1.0) * QMAX).astype("<u2").transpose(1, 2, 0)
        q[~valid] = NODATA16
        k = self.channels
        for r in range(q.shape[0]):
            os.pwrite(self.fd, np.ascontiguousarray(q[r]).tobytes(), ((r * self.width + x0) * k) * 2)

    def _close_fd(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def commit(self) -> None:
        os.fsync(self.fd)
        self._close_fd()
        self._stack.close()  # renames the finished strip into place

    def abandon(self) -> None:
        """Drop an unfinished strip (no-op after :meth:`commit`): its temporary file is removed."""
        self._close_fd()
        self._stack.__exit__(_Abandoned, _Abandoned(), None)


class _Abandoned(Exception):
    """Tells the atomic writer of an unfinished strip to discard its temporary file."""


def read_strip(partial: Path, i: int, grid: Grid, r0: int, r1: int, c0: int, c1: int, channels: int = 1) -> np.ndarray:
    """Rows ``[r0, r1)`` (strip-relative) and columns ``[c0, c1)`` of strip ``i``: uint16 (rows, cols, K)."""
    out = np.empty((r1 - r0, c1 - c0, channels), dtype="<u2")
    fd = os.open(strip_path(partial, i), os.O_RDONLY)
    try:
        n = (c1 - c0) * channels * 2
        for k, r in enumerate(range(r0, r1)):
            buf = os.pread(fd, n, ((r * grid.width + c0) * channels) * 2)
            out[k] = np.frombuffer(buf, dtype="<u2").reshape(c1 - c0, channels)
    finally:
        os.close(fd)
    return out


def raster_profile(crs, transform, height: int, width: int, **extra) -> dict:
    profile = dict(driver="GTiff", dtype="uint8", count=1, height=height, width=width, crs=crs,
                   transform=transform, tiled=True, blockxsize=TILE, blockysize=TILE, compress="deflate",
                   predictor=2, zlevel=6, bigtiff="IF_SAFER", interleave="band")
    profile.update(extra)
    return profile


def blended_blocks(grid: Grid, partial: Path, channels: int = 1, col_chunk: int = 2048):
    """``(window, prob float32 (h, w, K), nodata bool (h, w))`` for tile-aligned blocks covering the scene: the
    strips blended vertically (see the module docstring)."""
    wy = grid.weights_y()
    rows = grid.rows
    col_chunk = max(TILE, col_chunk // TILE * TILE)
    for y0 in range(0, grid.height, TILE):
        y1 = min(grid.height, y0 + TILE)
        strips = grid.strips_covering(y0, y1)
        for x0 in range(0, grid.width, col_chunk):
            x1 = min(grid.width, x0 + col_chunk)
            acc = np.zeros((y1 - y0, x1 - x0, channels), dtype=np.float32)
            nodata = np.zeros((y1 - y0, x1 - x0), dtype=bool)
            for i in strips:
                a, b = max(y0, rows[i]), min(y1, rows[i] + grid.win_h)
                q = read_strip(partial, i, grid, a - rows[i], b - rows[i], x0, x1, channels)
                nodata[a - y0:b - y0] |= q[..., 0] == NODATA16
                p = q.astype(np.float32) / np.float32(QMAX)
                acc[a - y0:b - y0] += wy[i, a - rows[i]:b - rows[i], None, None] * p
            yield Window(x0, y0, x1 - x0, y1 - y0), np.clip(acc, 0.0, 1.0), nodata


def n_blocks(grid: Grid, col_chunk: int = 2048) -> int:
    return -(-grid.height // TILE) * -(-grid.width // max(TILE, col_chunk // TILE * TILE))


def _assemble(grid: Grid, partial: Path, channels: int, crs, transform, map_tmp: Path, prob_tmp: Path,
              describe: Callable, decide: Callable, col_chunk: int,
              on_block: Callable[[int, int], None] | None) -> int:
    """The strips blended block by block into a uint8 map (nodata 255) and a probability raster (x 255, no data in
    the internal mask band). ``describe(map_ds, prob_ds)`` tags them; ``decide(prob (h, w, K), nodata)`` gives the
    block's map values and the probability to store. Returns the no-data pixel count."""
    total, nodata_pixels = n_blocks(grid, col_chunk), 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(map_tmp, "w", **raster_profile(crs, transform, grid.height, grid.width, nodata=CHANGE_NODATA)) as dm, \
                rasterio.open(prob_tmp, "w", **raster_profile(crs, transform, grid.height, grid.width)) as dp:
            describe(dm, dp)
            for done, (win, prob, nodata) in enumerate(blended_blocks(grid, partial, channels, col_chunk), 1):
                values, p = decide(prob, nodata)
                values[nodata] = CHANGE_NODATA
                p8 = np.rint(p * 255.0).astype(np.uint8)
                p8[nodata] = 0
                dm.write(values, 1, window=win)
                dp.write(p8, 1, window=win)
                dp.write_mask(np.where(nodata, 0, 255).astype(np.uint8), window=win)
                nodata_pixels += int(nodata.sum())
                if on_block is not None:
                    on_block(done, total)
    return nodata_pixels


def assemble_rasters(grid: Grid, partial: Path, crs, transform, change_tmp: Path, prob_tmp: Path,
                     threshold: float = 0.5, col_chunk: int = 2048,
                     on_block: Callable[[int, int], None] | None = None) -> dict:
    """Write ``change`` (0/1, nodata 255) and ``probability`` (0..255, internal nodata mask) GeoTIFFs.

    Returns counts: ``changed`` pixels, ``valid`` pixels.
    """
    counts = {"changed": 0, "valid": 0, "nodata": 0}

    def describe(dc, dp) -> None:
        dc.update_tags(1, DESCRIPTION="change: 1, no change: 0, no data: 255")
        dp.update_tags(1, DESCRIPTION="change probability x 255; no data in the mask band")

    def decide(prob: np.ndarray, nodata: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prob = prob[..., 0]
        change = (prob >= np.float32(threshold)).astype(np.uint8)
        counts["changed"] += int((change[~nodata] == 1).sum())
        return change, prob

    counts["nodata"] = _assemble(grid, partial, 1, crs, transform, change_tmp, prob_tmp, describe, decide, col_chunk,
                                 on_block)
    counts["valid"] = grid.height * grid.width - counts["nodata"]
    return counts


def assemble_class_rasters(grid: Grid, partial: Path, crs, transform, classes_tmp: Path, conf_tmp: Path,
                           class_names: Sequence[str], palette: Sequence[Sequence[int]], col_chunk: int = 2048,
                           on_block: Callable[[int, int], None] | None = None) -> dict:
    """Write ``classes`` (the most probable class index, nodata 255, the palette as its colour table, class names in
    its tags) and ``confidence`` (that class's blended probability x 255, internal nodata mask) GeoTIFFs.

    Returns counts: ``pixels`` per class (a list), ``valid`` and ``nodata`` pixels."""
    k = len(class_names)
    if k > CHANGE_NODATA:
        raise ValueError(f"{k} classes do not fit a uint8 class raster (at most {CHANGE_NODATA})")
    counts = {"pixels": [0] * k, "valid": 0, "nodata": 0}
    names = "; ".join(f"{i}: {n}" for i, n in enumerate(class_names))

    def describe(dc, dp) -> None:
        dc.update_tags(1, DESCRIPTION=f"class index ({names}); no data: {CHANGE_NODATA}")
        dc.update_tags(CLASS_NAMES=json.dumps(list(class_names)))
        dc.write_colormap(1, {i: tuple(int(v) for v in palette[i]) + (255,) for i in range(k)})
        dp.update_tags(1, DESCRIPTION="probability of the chosen class x 255; no data in the mask band")

    def decide(prob: np.ndarray, nodata: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cls = prob.argmax(axis=2).astype(np.uint8)
        conf = np.take_along_axis(prob, cls[..., None].astype(np.intp), axis=2)[..., 0]
        hist = np.bincount(cls[~nodata].ravel(), minlength=k)
        counts["pixels"] = [a + int(b) for a, b in zip(counts["pixels"], hist[:k])]
        return cls, conf

    counts["nodata"] = _assemble(grid, partial, k, crs, transform, classes_tmp, conf_tmp, describe, decide, col_chunk,
                                 on_block)
    counts["valid"] = grid.height * grid.width - counts["nodata"]
    return counts


def to_cog(src: Path, dst: Path) -> None:
    """Rewrite a tiled GeoTIFF as a Cloud-Optimised GeoTIFF (with overviews) through GDAL's COG driver."""
    from rasterio.shutil import copy

    copy(str(src), str(dst), driver="COG", COMPRESS="DEFLATE", PREDICTOR="2", BLOCKSIZE=str(TILE),
         OVERVIEWS="AUTO", OVERVIEW_RESAMPLING="NEAREST", BIGTIFF="IF_SAFER")
