"""``changekit models``: the registered models with family, parameters and published F1."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str]) -> int:
    from changekit.models import list_models

    p = argparse.ArgumentParser(prog="changekit models",
                                description="The registered models: family, parameters (total / trainable) and the "
                                            "published change-class F1 with its source.")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'ban_*'")
    p.add_argument("--json", action="store_true", help="machine-readable rows")
    p.add_argument("--names", action="store_true", help="names only, one a line (no model is built)")
    args = p.parse_args(argv)
    if args.names:
        for name in list_models(args.pattern):
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
        print(json.dumps(rows, indent=1))
        return 0
    table = Table(title="registered models (parameters of the architecture; F1 of the change class, %)",
                  title_justify="left")
    for col, right in (("name", False), ("family", False), ("params", True), ("trainable", True),
                       ("published F1", False), ("source", False)):
        table.add_column(col, justify="right" if right else "left", overflow="fold")
    for r in rows:
        f1 = ", ".join(f"{p['dataset']} {p['f1']:.2f}" for p in r["published"]) or "-"
        sources = "; ".join(dict.fromkeys(p["source"] for p in r["published"])) or "-"
        table.add_row(r["name"], r["family"], f"{r['params_total']:,}", f"{r['params_trainable']:,}", f1, sources)
    Console(width=None if sys.stdout.isatty() else 220).print(table)
    return 0
