"""Dataset tools behind ``changekit check-dataset``, ``changekit tile`` and ``changekit stats``.

* ``check-dataset PRESET ROOT``: per split, the pair count, image sizes, band counts, stored label values
  and change ratio, plus every missing/unmatched/unreadable file; verdict, exit 0 (ok) / 1 (problems).
* ``tile SRC DST --size N --stride S``: cut large pairs into tiles, split by split, in the same layout
  (GeoTIFFs keep their georeferencing; labels keep their stored values).
* ``stats PRESET ROOT --split train``: streaming per-band mean/std over both dates (stored units).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from changekit.errors import ChangekitError, DataError

__all__ = ["check_main", "tile_main", "stats_main", "check_dataset", "tile_dataset", "dataset_stats"]


# ---------------------------------------------------------------------------------------------- shared CLI
def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("preset", help="dataset preset (levir-cd, levir-cd-plus, s2looking, whu-cd, whu-cd-whole, cdd, "
                                  "sysu-cd, dsifn, clcd, bandon, folder)")
    p.add_argument("root", help="dataset root folder")
    p.add_argument("--split", action="append", dest="splits", metavar="SPLIT",
                   help="split to use (repeatable); default: the preset's splits. 'none' = flat root/{A,B,label}")
    p.add_argument("--dirs", nargs=3, metavar=("DATE1", "DATE2", "LABEL"), help="override folder names")
    p.add_argument("--suffix", nargs="+", metavar="SUF", help="override suffixes: one, or one per folder")
    p.add_argument("--list-file", help="names list, e.g. 'list/{split}.txt'")
    p.add_argument("--label-encoding", choices=["binary", "0-255", "0-1", "index"])
    p.add_argument("--num-classes", type=int)
    p.add_argument("--bands", type=int, nargs="+", help="0-based band indices to use")
    p.add_argument("--in-channels", type=int, help="expected band count")
    p.add_argument("--no-labels", action="store_true", help="prediction-only set (no label folder)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if args.dirs:
        kw["dirs"] = tuple(args.dirs)
    if args.suffix:
        kw["suffixes"] = args.suffix[0] if len(args.suffix) == 1 else tuple(args.suffix)
    if args.list_file:
        kw["list_file"] = args.list_file
    if args.label_encoding:
        kw["label_encoding"] = args.label_encoding
    if args.num_classes:
        kw["num_classes"] = args.num_classes
    if args.bands:
        kw["bands"] = args.bands
    if args.in_channels:
        kw["in_channels"] = args.in_channels
    if args.no_labels:
        kw["labels"] = False
    return kw


def _resolve_splits(preset, root: Path, splits: Sequence[str] | None, overrides: dict) -> list[str | None]:
    """Explicit splits, else the preset's; a flat folder (dirs directly under root, no split folders) -> [None]."""
    if splits:
        return [None if s.lower() in ("none", "flat", "") else s for s in splits]
    if preset.split_dir and preset.dataset_class == "ChangeDataset" and root.is_dir():
        dirs = overrides.get("dirs", preset.dirs)
        has_split = any((root / preset.split_dir.format(split=s)).is_dir() for s in preset.splits)
        if not has_split and (root / dirs[0]).is_dir():
            return [None]
    return list(preset.splits)


def _console():
    from rich.console import Console

    return Console(file=sys.stdout, width=max(160, _term_width()), soft_wrap=False, highlight=False)


def _term_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 120


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


def _fmt_counter(c, key=lambda k: str(k), k: int = 4) -> str:
    items = c.most_common()
    s = ", ".join(f"{key(a)} ({n})" for a, n in items[:k])
    return s + (f", ... {len(items) - k} more" if len(items) > k else "")


def check_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="changekit check-dataset",
                                description="Check a dataset folder against a preset: counts, sizes, bands, label "
                                            "values, change ratio, missing/unmatched/unreadable files.")
    _add_dataset_args(p)
    p.add_argument("--quick", action="store_true", help="read headers only (sizes, bands); skip pixel/label checks")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    from rich.table import Table

    from changekit.data.presets import get_preset

    preset = get_preset(args.preset)
    con = _console()
    reports = check_dataset(preset.name, args.root, args.splits, full=not args.quick,
                            console=None if args.json else con, **_overrides(args))
    n_problems = sum(len(r.problems) for r in reports.values())
    total = sum(r.n for r in reports.values())
    if total == 0 and n_problems == 0:
        for r in reports.values():
            r.problems.append("empty dataset: no image pairs found.")
        n_problems = len(reports)
    if args.json:
        out = {str(s): {"pairs": r.n, "sizes": {f"{h}x{w}": n for (h, w), n in r.sizes.items()},
                        "bands": dict(r.bands), "label_values": {str(k): v for k, v in r.label_values.items()},
                        "change_ratio": r.change_ratio, "problems": r.problems} for s, r in reports.items()}
        out["ok"] = n_problems == 0
        print(json.dumps(out, indent=1))
        return 0 if n_problems == 0 else 1
    print(f"{preset.name} at {args.root}\n  layout: {preset.layout}")
    t = Table()
    for col in ("split", "pairs", "image size (HxW)", "bands", "label values (pixels)", "change ratio", "problems"):
        t.add_column(col, justify="right" if col in ("pairs", "change ratio", "problems") else "left")
    for split, r in reports.items():
        lv = _fmt_counter(r.label_values) if r.label_values else ("-" if args.quick or not r.labelled else "none")
        t.add_row(split or "(flat)", str(r.n), _fmt_counter(r.sizes, lambda k: f"{k[0]}x{k[1]}", 3) or "-",
                  _fmt_counter(r.bands, str, 3) or "-", lv,
                  f"{100 * r.change_ratio:.2f} %" if r.valid else "-", str(len(r.problems)),
                  style="red" if r.problems else None)
    con.print(t)
    if n_problems:
        print(f"\nProblems ({n_problems}):")
        for split, r in reports.items():
            for prob in r.problems:
                print(f"  [{split or 'flat'}] {prob}")
        print(f"\nVERDICT: {n_problems} problem(s) found -- fix them before training.")
        return 1
    print(f"\nVERDICT: OK -- {total} pair(s) in {len(reports)} split(s) load cleanly"
          + (" (headers only: run without --quick to check pixels and labels)." if args.quick else "."))
    return 0


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
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ChangekitError(f"{dst}: the output folder must differ from the source.")
    explicit = bool(splits)
    splits = _resolve_splits(p, src, [s or "none" for s in splits] if splits else None, overrides)
    if not explicit and p.split_dir and p.dataset_class == "ChangeDataset":  # tile the splits that exist
        present = [s for s in splits if s is None or (src / p.split_dir.format(split=s)).is_dir()]
        splits = present or splits
    overrides.setdefault("labels", "auto")
    counts: dict[str | None, int] = {}
    for split in splits:
        ds = build_dataset(p, src, split, **overrides)
        ds.validate(full=False)  # sizes must match before cutting
        dirs = ds.dirs
        base = dst / split if split else dst
        n = 0
        prog = _progress(console) if console is not None else None
        if prog:
            prog.start()
            task = prog.add_task(f"tiling {split or 'flat'}", total=len(ds))
        try:
            for s in ds.samples:
                stem = s.name.replace("/", "_")
                for d, path in zip(dirs, (s.t1, s.t2, s.label)):
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


def tile_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="changekit tile",
                                description="Cut large image pairs (and labels) into tiles, keeping splits apart. "
                                            "Output: DST/<split>/<date1,date2,label folders>/<name>_<row>_<col>.<ext>.")
    p.add_argument("preset", help="preset of the source layout (e.g. whu-cd-whole, levir-cd, folder)")
    p.add_argument("src", help="source dataset root")
    p.add_argument("dst", help="output root (tiles in the same split/folder layout)")
    p.add_argument("--size", type=int, default=256, help="tile size in px (default 256)")
    p.add_argument("--stride", type=int, help="step between tiles (default: size, no overlap)")
    p.add_argument("--split", action="append", dest="splits", metavar="SPLIT")
    p.add_argument("--dirs", nargs=3, metavar=("DATE1", "DATE2", "LABEL"))
    p.add_argument("--suffix", nargs="+", metavar="SUF")
    args = p.parse_args(argv)
    kw: dict[str, Any] = {}
    if args.dirs:
        kw["dirs"] = tuple(args.dirs)
    if args.suffix:
        kw["suffixes"] = args.suffix[0] if len(args.suffix) == 1 else tuple(args.suffix)
    con = _console()
    counts = tile_dataset(args.preset, args.src, args.dst, args.size, args.stride, args.splits, console=con, **kw)
    for split, n in counts.items():
        print(f"{split or '(flat)'}: {n} tiles")
    print(f"wrote {sum(counts.values())} tiles of {args.size}px (stride {args.stride or args.size}) to {args.dst}; "
          f"read them with preset 'folder' (dirs/suffixes as the source).")
    return 0


# ---------------------------------------------------------------------------------------------- stats
def dataset_stats(preset: str, root: str | os.PathLike, split: str | None = None, *, max_images: int | None = None,
                  console=None, **overrides: Any) -> dict[str, Any]:
    """Per-band mean/std over both dates of a split (stored units), streamed image by image (float64 sums).
    ``split=None``: the preset's first split (train), or the flat folder."""
    from changekit.data.io import read_image
    from changekit.data.presets import build_dataset, get_preset

    p = get_preset(preset)
    root = Path(root)
    split = _resolve_splits(p, root, [split] if split is not None else None, overrides)[0]
    overrides.setdefault("labels", False)
    ds = build_dataset(p, root, split, **overrides)
    samples = ds.samples[:max_images] if max_images else ds.samples
    s1 = s2 = None
    n = 0
    prog = _progress(console) if console is not None else None
    if prog:
        prog.start()
        task = prog.add_task(f"stats {split or 'flat'}", total=len(samples))
    try:
        for smp in samples:
            for path in (smp.t1, smp.t2):
                a = read_image(path, ds.bands)
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
    return {"split": split, "images": 2 * len(samples), "pixels": n, "mean": mean.tolist(), "std": std.tolist()}


def stats_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="changekit stats",
                                description="Per-band mean/std of a dataset split (both dates, stored units), "
                                            "for the data config's mean/std.")
    _add_dataset_args(p)
    p.add_argument("--max-images", type=int, help="use only the first N pairs")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    split = args.splits[0] if args.splits else None
    con = _console()
    res = dataset_stats(args.preset, args.root, split, max_images=args.max_images,
                        console=None if args.json else con, **_overrides(args))
    if args.json:
        print(json.dumps(res))
        return 0
    from rich.table import Table

    t = Table(title=f"{args.preset} {res['split'] or '(flat)'}: {res['images']} images, {res['pixels']} px/band",
              title_justify="left")
    t.add_column("band", justify="right")
    t.add_column("mean", justify="right")
    t.add_column("std", justify="right")
    for i, (m, s) in enumerate(zip(res["mean"], res["std"])):
        t.add_row(str(i), f"{m:.4f}", f"{s:.4f}")
    con.print(t)
    print("data config:\n  mean: [" + ", ".join(f"{m:.4f}" for m in res["mean"]) + "]\n  std: ["
          + ", ".join(f"{s:.4f}" for s in res["std"]) + "]")
    return 0
