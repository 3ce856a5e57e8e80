"""``changekit timeline``: a change model over N dates -- when each place changed, how often
(:func:`changekit.geo.timeline.run_timeline`)."""

from __future__ import annotations

from changekit.cli._parser import Parser
from changekit.cli.scene import add_model_options, add_run_options, run_kwargs


def build_parser() -> Parser:
    p = Parser(prog="changekit timeline",
               description="Run a change model over every pair of a series of dates and map when each place changed "
                           "first and last, and how often: streamed, blended and resumable pair by pair, like scene.")
    p.add_argument("--dates", nargs="+", required=True, metavar="DATE",
                   help="the dates, oldest first (rasters, Sentinel-2 band folders or STAC Items), or one .txt file "
                        "listing them a line each")
    p.add_argument("--labels", nargs="+", metavar="LABEL", help="a label per date, in time order (e.g. 2019 2020 ...)")
    add_model_options(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--pairs", choices=["consecutive", "first"], default="consecutive",
                   help="consecutive (D1->D2, D2->D3 ...; default) or first (D1->Dk)")
    p.add_argument("--min-persistence", type=int, default=1, metavar="K",
                   help="a change counts only if it persists K dates (default 1: every change counts)")
    p.add_argument("--no-pair-rasters", action="store_true",
                   help="remove each pair's probability.tif once combined (change.tif is kept for reruns)")
    add_run_options(p)
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    kwargs = run_kwargs(args)
    from changekit.geo.timeline import run_timeline

    common = {k: kwargs.pop(k) for k in ("threshold", "min_area", "simplify", "align", "pixel_coords", "restart",
                                         "progress")}
    rec = run_timeline(args.dates, args.out, labels=args.labels, pairs=args.pairs,
                       min_persistence=args.min_persistence, pair_rasters=not args.no_pair_rasters,
                       vectors=not args.no_vectors, **common, **kwargs)
    n = len(rec["dates"])
    print(f"timeline of {n} dates ({rec['pair_mode']} pairs, {rec['pairs_resumed']} kept from before), "
          f"{rec['seconds']:.1f} s")
    why = f" (auto: {rec['precision_reason']})" if rec.get("precision_reason") else ""
    print(f"precision {rec['precision']}{why}")
    total = max(1, rec["valid_pixels"])
    print(f"changed at least once: {rec['changed_pixels']} of {rec['valid_pixels']} valid pixels "
          f"({100 * rec['changed_pixels'] / total:.2f} %); first changed at: "
          + ", ".join(f"{d['label']} {c}" for d, c in zip(rec["dates"], rec["first_change_pixels"][1:]) if c))
    if "polygons" in rec:
        print(f"polygons: {rec['polygons']} (dropped below --min-area: {rec['polygons_dropped']})")
    for k, v in rec["outputs"].items():
        print(f"  {k:<13} {args.out}/{v}")
    print(f"review it on a map: changekit view {args.out}")
    return 0
