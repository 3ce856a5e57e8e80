"""``changekit models``: changekit's trained models (shipped weights, held-out scores) and the registered
architectures with family, parameters and published F1."""

from __future__ import annotations

import json
import sys

from changekit.cli._parser import Parser


def main(argv: list[str]) -> int:
    from changekit.models import list_models

    p = Parser(prog="changekit models",
               description="The registered models: family, parameters (total / trainable) and the "
                           "published change-class F1 with its source.")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'ban_*'")
    p.add_argument("--json", action="store_true", help="machine-readable rows")
    p.add_argument("--names", action="store_true", help="names only, one a line (no model is built)")
    args = p.parse_args(argv)
    import fnmatch

    from changekit.models.pretrained import PRETRAINED

    shipped = [n for n in sorted(PRETRAINED) if not args.pattern or fnmatch.fnmatch(n, args.pattern)]
    if args.names:
        for name in shipped + list_models(args.pattern):
            print(name)
        return 0
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from changekit.models.summary import model_table

    names = list_models(args.pattern)
    with Progress(transient=True, disable=args.json) as bar:
        task = bar.add_task("counting parameters", total=len(names))
        rows = model_table(args.pattern, on_model=lambda _: bar.advance(task))
    if args.json:
        # one list: changekit's trained models first ("kind": "pretrained"), then the architectures
        print(json.dumps([{"name": n, "kind": "pretrained", **PRETRAINED[n]} for n in shipped]
                         + [{"kind": "architecture", **r} for r in rows], indent=1))
        return 0
    console = Console(width=None if sys.stdout.isatty() else 220)
    if shipped:
        t = Table(title="changekit's trained models (weights in the package; scores on held-out data, change class, %)",
                  title_justify="left")
        for col in ("name", "architecture", "data", "bands", "held-out F1", "IoU", "P", "R", "held out", "card"):
            t.add_column(col, justify="right" if col in ("held-out F1", "IoU", "P", "R") else "left", overflow="fold")
        for n in shipped:
            c, h = PRETRAINED[n], PRETRAINED[n]["heldout"]
            arch = f"{c['arch']} x{c['ensemble']} (ensemble)" if c.get("ensemble") else c["arch"]
            t.add_row(n, arch, c["data"], c["bands"], f"{100 * h['f1']:.1f}", f"{100 * h['iou']:.1f}",
                      f"{100 * h['precision']:.1f}", f"{100 * h['recall']:.1f}", h["on"], c["card"])
        console.print(t)
    table = Table(title="registered models (parameters of the architecture; F1 of the change class, %)",
                  title_justify="left")
    for col, right in (("name", False), ("family", False), ("params", True), ("trainable", True),
                       ("published F1", False), ("source", False)):
        table.add_column(col, justify="right" if right else "left", overflow="fold")
    for r in rows:
        f1 = ", ".join(f"{p['dataset']} {p['f1']:.2f}" for p in r["published"]) or "-"
        sources = "; ".join(dict.fromkeys(p["source"] for p in r["published"])) or "-"
        table.add_row(r["name"], r["family"], f"{r['params_total']:,}", f"{r['params_trainable']:,}", f1, sources)
    console.print(table)
    return 0
