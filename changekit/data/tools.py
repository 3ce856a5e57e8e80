"""Dataset tools: what ``changekit check-dataset``, ``changekit tile`` and ``changekit stats`` run.

* ``check-dataset PRESET ROOT``: per split, the pair count, image sizes, band counts, stored label values
  and change ratio, plus every missing/unmatched/unreadable file.
* ``tile SRC DST --size N --stride S``: cut large pairs into tiles, split by split, in the same layout
  (GeoTIFFs keep their georeferencing; labels keep their stored values).
* ``stats PRESET ROOT --split train``: streaming per-band mean/std over both dates (stored units).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from changekit.data.folders import ChangeDataset
from changekit.errors import ChangekitError, DataError

__all__ = ["check_dataset", "tile_dataset", "dataset_stats"]


def _resolve_splits(preset, root: Path, splits: Sequence[str] | None, overrides: dict) -> list[str | None]:
    """Explicit splits, else the preset's; a flat folder (dirs directly under root, no split folders) -> [None]."""
    if splits:
        return [None if s.lower() in ("none", "flat", "") else s for s in splits]
    if preset.split_dir and preset.dataset_class is ChangeDataset and root.is_dir():
        dirs = overrides.get("dirs", preset.dirs)
        has_split = any((root / preset.split_dir.format(split=s)).is_dir() for s in preset.splits)
        if not has_split and (root / dirs[0]).is_dir():
            return [None]
    return list(preset.splits)


def _progress(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


# ---------------------------------------------------------------------------------------------- check-dataset
def check_dataset(preset: str, root: str | os.PathLike, splits: Sequence[str | None] | None = None, *,
                  full: bool = True, console=None, **overrides: Any) -> dict[str | None, Any]:
    """Validate each split; returns {split: ValidationReport} (construction problems included)."""
    from changekit.data.presets import build_dataset, get_preset

    p = get_preset(preset)
    root = Path(root)
    splits = _resolve_splits(p, root, [s or "none" for s in splits] if splits else None, overrides)
    reports: dict[str | None, Any] = {}
    for split in splits:
        ds = build_dataset(p, root, split, strict=False, **overrides)
        if console is not None:
            with _progress(console) as prog:
                task = prog.add_task(f"checking {split or 'flat'}", total=len(ds))
                rep = ds.validate(full=full, raise_errors=False, progress=lambda i, t=task: prog.advance(t))
        else:
            rep = ds.validate(full=full, raise_errors=False)
        rep.labelled = ds.has_labels
        reports[split] = rep
    return reports


# ---------------------------------------------------------------------------------------------- tile
def _positions(n: int, size: int, stride: int) -> list[int]:
    if n <= size:
        return [0]
    pos = list(range(0, n - size + 1, stride))
    if pos[-1] != n - size:
        pos.append(n - size)
    return pos


def _tile_file(src: Path, dst_dir: Path, stem: str, size: int, stride: int, out_ext: str) -> int:
    """Cut one raster into tiles named <stem>_<row>_<col><ext>; returns the tile count."""

    import warnings

    dst_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # rasterio's Affine '*' inside window_transform
        return _tile_file_inner(src, dst_dir, stem, size, stride, out_ext)


def _tile_file_inner(src: Path, dst_dir: Path, stem: str, size: int, stride: int, out_ext: str) -> int:
    from changekit.data.io import _read_raw, write_png, write_tiff

    if src.suffix.lower() in (".tif", ".tiff"):
        import rasterio
        from rasterio.windows import Window

        try:
            ds = rasterio.open(src)
        except Exception as e:
            raise DataError(f"{src}: cannot read image ({e}). The file is corrupt; re-download or re-export it.") from e
        with ds:
            H, W = ds.height, ds.width
            n = 0
            for y in _positions(H, size, stride):
                for x in _positions(W, size, stride):
                    win = Window(x, y, min(size, W - x), min(size, H - y))
                    arr = np.moveaxis(ds.read(window=win), 0, -1)
                    write_tiff(dst_dir / f"{stem}_{y:05d}_{x:05d}{out_ext}", arr, crs=ds.crs,
                               transform=ds.window_transform(win), nodata=ds.nodata)
                    n += 1
            return n
    arr = _read_raw(src)
    H, W = arr.shape[:2]
    n = 0
    for y in _positions(H, size, stride):
        for x in _positions(W, size, stride):
            write_png(dst_dir / f"{stem}_{y:05d}_{x:05d}{out_ext}", arr[y:y + size, x:x + size])
            n += 1
    return n


def tile_dataset(preset: str, src: str | os.PathLike, dst: str | os.PathLike, size: int, stride: int | None = None,
                 splits: Sequence[str | None] | None = None, console=None, **overrides: Any) -> dict[str | None, int]:
    """Tile every pair of each split of ``src`` into ``dst/<split>/<dirs>/``; returns tiles per split.
    Splits stay apart (a tile inherits its source pair's split). PNG/JPG -> PNG tiles, TIFF -> GeoTIFF tiles."""
    from changekit.data.presets import build_dataset, get_preset

    if size <= 0 or (stride is not None and stride <= 0):
        raise ChangekitError(f"--size {size} / --stride {stride} must be positive.")
    stride = stride or size
    p = get_preset(preset)
    if p.name.endswith("-tiles"):
        raise ChangekitError(f"{p.name} cuts the official tiles into mmseg's crops as it reads them; there is nothing "
                             f"to tile: train and evaluate on it directly (data.dataset: {p.name})")
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ChangekitError(f"{dst}: the output folder must differ from the source.")
    explicit = bool(splits)
    splits = _resolve_splits(p, src, [s or "none" for s in splits] if splits else None, overrides)
    if not explicit and p.split_dir and p.dataset_class is ChangeDataset:  # tile the splits that exist
        present = [s for s in splits if s is None or (src / p.split_dir.format(split=s)).is_dir()]
        splits = present or splits
    overrides.setdefault("labels", "auto")
    counts: dict[str | None, int] = {}
    for split in splits:
        ds = build_dataset(p, src, split, **overrides)
        ds.validate(full=False)  # sizes must match before cutting
        dirs = getattr(ds, "dirs", p.dirs)  # official layouts: the preset's folder names
        base = dst / split if split else dst
        n = 0
        prog = _progress(console) if console is not None else None
        if prog:
            prog.start()
            task = prog.add_task(f"tiling {split or 'flat'}", total=len(ds))
        try:
            for s in ds.samples:
                stem = s.name.replace("/", "_")
                for d, path in zip(dirs, (*s.images, s.label)):
                    if path is None:
                        continue
                    ext = ".tif" if path.suffix.lower() in (".tif", ".tiff") else ".png"
                    k = _tile_file(path, base / d, stem, size, stride, ext)
                n += k
                if prog:
                    prog.advance(task)
        finally:
            if prog:
                prog.stop()
        counts[split] = n
    return counts


# ---------------------------------------------------------------------------------------------- stats
def dataset_stats(preset: str, root: str | os.PathLike, split: str | None = None, *, max_images: int | None = None,
                  console=None, **overrides: Any) -> dict[str, Any]:
    """Per-band mean/std over both dates of a split (stored units), streamed image by image (float64 sums).
    ``split=None``: the preset's first split (train), or the flat folder."""
    from changekit.data.presets import build_dataset, get_preset

    p = get_preset(preset)
    root = Path(root)
    split = _resolve_splits(p, root, [split] if split is not None else None, overrides)[0]
    overrides.setdefault("labels", False)
    ds = build_dataset(p, root, split, **overrides)
    samples = ds.samples[:max_images] if max_images else ds.samples
    # each image file once: single-date samples hold one image, and crops of one tile (ISPRS tiles) share it
    paths = list(dict.fromkeys(p for smp in samples for p in smp.images))
    s1 = s2 = None
    n = 0
    prog = _progress(console) if console is not None else None
    if prog:
        prog.start()
        task = prog.add_task(f"stats {split or 'flat'}", total=len(paths))
    try:
        for path in paths:
            a = ds._read_image(path)  # the dataset's own reader: band selection, band folders
            a = a.reshape(-1, a.shape[2]).astype(np.float64)
            if s1 is None:
                s1, s2 = np.zeros(a.shape[1]), np.zeros(a.shape[1])
            if a.shape[1] != len(s1):
                raise DataError(f"{path}: has {a.shape[1]} band(s), other images have {len(s1)}. "
                                "Select common bands with --bands.")
            s1 += a.sum(0)
            s2 += (a * a).sum(0)
            n += a.shape[0]
            if prog:
                prog.advance(task)
    finally:
        if prog:
            prog.stop()
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
    return {"split": split, "images": len(paths), "pixels": n, "mean": mean.tolist(), "std": std.tolist()}
