"""``changekit tile``: cut large image pairs into tiles, split by split, in the same layout."""

from __future__ import annotations

from typing import Any

from changekit.cli._dataset_args import console
from changekit.cli._parser import Parser
from changekit.data.tools import tile_dataset


def main(argv: list[str]) -> int:
    p = Parser(prog="changekit tile",
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
    con = console()
    counts = tile_dataset(args.preset, args.src, args.dst, args.size, args.stride, args.splits, console=con, **kw)
    for split, n in counts.items():
        print(f"{split or '(flat)'}: {n} tiles")
    print(f"wrote {sum(counts.values())} tiles of {args.size}px (stride {args.stride or args.size}) to {args.dst}; "
          f"read them with preset 'folder' (dirs/suffixes as the source).")
    return 0
