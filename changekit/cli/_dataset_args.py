"""Arguments and output helpers shared by the dataset commands (check-dataset, tile, stats)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def add_dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("preset", help="dataset preset (levir-cd, levir-cd-plus, s2looking, whu-cd, whu-cd-whole, cdd, "
                                  "sysu-cd, dsifn, clcd, bandon, oscd, sztaki, potsdam, vaihingen, "
                                  "potsdam-tiles, vaihingen-tiles, loveda, loveda-official, synthetic-landcover, folder)")
    p.add_argument("root", help="dataset root folder")
    p.add_argument("--split", action="append", dest="splits", metavar="SPLIT",
                   help="split to use (repeatable); default: the preset's splits. 'none' = flat root/{A,B,label}")
    p.add_argument("--dirs", nargs="+", metavar="DIR",
                   help="override folder names: DATE1 DATE2 LABEL (change sets) or IMAGES LABELS (segmentation sets)")
    p.add_argument("--suffix", nargs="+", metavar="SUF", help="override suffixes: one, or one per folder")
    p.add_argument("--list-file", help="names list, e.g. 'list/{split}.txt'")
    p.add_argument("--label-encoding", choices=["binary", "0-255", "0-1", "index", "reduce-zero"])
    p.add_argument("--num-classes", type=int)
    p.add_argument("--bands", type=int, nargs="+", help="0-based band indices to use")
    p.add_argument("--in-channels", type=int, help="expected band count")
    p.add_argument("--no-labels", action="store_true", help="prediction-only set (no label folder)")
    isprs = p.add_argument_group("official ISPRS tiles (potsdam-tiles, vaihingen-tiles)")
    isprs.add_argument("--tiles", nargs="+", metavar="TILE", help="only these tiles of the split, e.g. 2_10 or area1")
    isprs.add_argument("--boundary", choices=["eroded", "full"],
                       help="label variant: eroded (noBoundary, mmseg's default) or full")
    isprs.add_argument("--product", choices=["RGB", "IRRG", "RGBIR"], help="Potsdam image product (default RGB)")
    p.add_argument("--area", choices=["both", "urban", "rural"], help="loveda-official: the areas to read (default both)")
    oscd = p.add_argument_group("OSCD (Sentinel-2 band files)")
    oscd.add_argument("--band-names", help="bands by name: all (13), rgbn (B02 B03 B04 B08) or a list, e.g. B04,B03,B02")
    oscd.add_argument("--label-source", choices=["tif", "png"], help="labels from <city>-cm.tif (default) or cm.png")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
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
    for key in ("tiles", "boundary", "product", "area", "band_names", "label_source"):
        if getattr(args, key, None):
            kw[key] = getattr(args, key)
    return kw


def console():
    from rich.console import Console

    return Console(file=sys.stdout, width=max(160, _term_width()), soft_wrap=False, highlight=False)


def _term_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 120


def fmt_counter(c, key=lambda k: str(k), k: int = 4) -> str:
    items = c.most_common()
    s = ", ".join(f"{key(a)} ({n})" for a, n in items[:k])
    return s + (f", ... {len(items) - k} more" if len(items) > k else "")
