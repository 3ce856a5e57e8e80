"""``changekit score``: metrics of saved change maps against labels (:func:`changekit.metrics.score_maps`)."""

from __future__ import annotations

import json
from pathlib import Path

from changekit.cli._parser import Parser


def main(argv: list[str]) -> int:
    from changekit.metrics import SUMMARY_KEYS, format_metrics_table, json_ready, score_maps
    from changekit.metrics.maps import LABEL_ENCODINGS

    p = Parser(
        prog="changekit score",
        description=(
            "Metrics of saved binary change maps against labels, matched by file name (stem). "
            "Predictions: 0/255 or 0/1. Labels: 0/255 (255 = change) or 0/1 with the ignore value; "
            "'auto' reads a label map as 0/1 + ignore when it contains a 1, else as 0/255."
        ),
    )
    p.add_argument("pred_dir", type=Path)
    p.add_argument("label_dir", type=Path)
    p.add_argument("--ignore", type=int, default=255, help="label value excluded from the metrics (default 255)")
    p.add_argument("--label-encoding", choices=LABEL_ENCODINGS, default="auto")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON (the keys of metrics.json)")
    args = p.parse_args(argv)
    metrics = score_maps(args.pred_dir, args.label_dir, args.ignore, args.label_encoding)
    if args.json:
        keep = {k: metrics[k] for k in SUMMARY_KEYS} | {"per_class": metrics["per_class"], "confusion": metrics["confusion"]}
        print(json.dumps(json_ready(keep), indent=2))
    else:
        print(format_metrics_table(metrics, mode=f"saved maps ({metrics['pairs']} pairs, ignore {args.ignore})"))
    return 0
