"""``changekit stats``: per-band mean/std of a dataset split, for the data config."""

from __future__ import annotations

import json

from changekit.cli._dataset_args import add_dataset_args, console, overrides
from changekit.cli._parser import Parser
from changekit.data.tools import dataset_stats


def main(argv: list[str]) -> int:
    p = Parser(prog="changekit stats",
               description="Per-band mean/std of a dataset split (both dates, stored units), "
                           "for the data config's mean/std.")
    add_dataset_args(p)
    p.add_argument("--max-images", type=int, help="use only the first N pairs")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    split = args.splits[0] if args.splits else None
    con = console()
    res = dataset_stats(args.preset, args.root, split, max_images=args.max_images,
                        console=None if args.json else con, **overrides(args))
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
