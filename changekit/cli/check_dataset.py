"""``changekit check-dataset``: check a dataset folder against a preset; exit 0 (ok) or 1 (problems)."""

from __future__ import annotations

import json

from changekit.cli._dataset_args import add_dataset_args, console, fmt_counter, overrides
from changekit.cli._parser import Parser
from changekit.data.tools import check_dataset


def main(argv: list[str]) -> int:
    p = Parser(prog="changekit check-dataset",
               description="Check a dataset folder against a preset: counts, sizes, bands, label "
                           "values, change ratio, missing/unmatched/unreadable files.")
    add_dataset_args(p)
    p.add_argument("--quick", action="store_true", help="read headers only (sizes, bands); skip pixel/label checks")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    from rich.table import Table

    from changekit.data.presets import get_preset

    preset = get_preset(args.preset)
    con = console()
    reports = check_dataset(preset.name, args.root, args.splits, full=not args.quick,
                            console=None if args.json else con, **overrides(args))
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
    seg = preset.task == "segmentation"  # single images with class maps: no pairs, no change ratio
    unit, ratio = ("images", "labelled (not ignored)") if seg else ("pairs", "change ratio")
    t = Table()
    for col in ("split", unit, "image size (HxW)", "bands", "label values (pixels)", ratio, "problems"):
        t.add_column(col, justify="right" if col in (unit, ratio, "problems") else "left")
    for split, r in reports.items():
        lv = fmt_counter(r.label_values) if r.label_values else ("-" if args.quick or not r.labelled else "none")
        t.add_row(split or "(flat)", str(r.n), fmt_counter(r.sizes, lambda k: f"{k[0]}x{k[1]}", 3) or "-",
                  fmt_counter(r.bands, str, 3) or "-", lv,
                  (f"{100 * r.valid / max(1, sum(r.label_values.values())):.2f} %" if seg else
                   f"{100 * r.change_ratio:.2f} %") if r.valid else "-", str(len(r.problems)),
                  style="red" if r.problems else None)
    con.print(t)
    if n_problems:
        print(f"\nProblems ({n_problems}):")
        for split, r in reports.items():
            for prob in r.problems:
                print(f"  [{split or 'flat'}] {prob}")
        print(f"\nVERDICT: {n_problems} problem(s) found -- fix them before training.")
        return 1
    print(f"\nVERDICT: OK -- {total} {'image' if seg else 'pair'}(s) in {len(reports)} split(s) load cleanly"
          + (" (headers only: run without --quick to check pixels and labels)." if args.quick else "."))
    return 0
