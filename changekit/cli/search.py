"""``changekit search``: candidate dates from a STAC API over an area of interest, best first per period; the best
one per period written as a local Item file for ``changekit scene`` (:mod:`changekit.data.stac_search`)."""

from __future__ import annotations

from pathlib import Path

from changekit.cli._parser import Parser


def main(argv: list[str]) -> int:
    from changekit.data.stac_search import EARTH_SEARCH

    p = Parser(prog="changekit search",
               description="Find Sentinel-2 (or any) STAC Items over an area of interest, one period at a time, "
                           "ranked by cloud over the area; write the best per period as Item files.")
    p.add_argument("--url", default=EARTH_SEARCH, help=f"STAC API (default Earth Search, {EARTH_SEARCH})")
    p.add_argument("--collection", required=True, help="e.g. sentinel-2-l1c (changekit's s2- models) or sentinel-2-l2a")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--aoi", help="GeoJSON of the area of interest (EPSG:4326)")
    where.add_argument("--bbox", help="W,S,E,N in degrees (EPSG:4326)")
    p.add_argument("--dates", nargs="+", required=True, metavar="START/END",
                   help="one period per date wanted, e.g. 2019-06/2019-09 2023-06/2023-09")
    p.add_argument("--max-cloud", type=float, default=20.0, help="largest cloud cover of a product, %% (default 20)")
    p.add_argument("--show", type=int, default=5, help="candidates listed per period (default 5)")
    p.add_argument("--out", required=True, help="folder for the chosen Items (date1_<id>.json, date2_<id>.json ...)")
    args = p.parse_args(argv)
    from changekit.data.stac import StacOptions, aoi_bounds
    from changekit.data.stac_search import search_periods, write_choice
    from changekit.errors import DataError

    bbox = aoi_bounds(StacOptions(bbox=args.bbox.split(",") if args.bbox else None, aoi=args.aoi))
    found = search_periods(args.url, args.collection, bbox, args.dates, args.max_cloud)
    empty = [period for period, cands in zip(args.dates, found) if not cands]
    if empty:
        raise DataError(f"no {args.collection} Item over the area with cloud cover <= {args.max_cloud:g} % in "
                        f"{', '.join(empty)}; widen the period or raise --max-cloud")
    chosen = []
    for k, (period, cands) in enumerate(zip(args.dates, found), start=1):
        print(f"date {k} ({period}): {len(cands)} candidate(s)")
        for c in cands[: args.show]:
            aoi = "n/a" if c.aoi_cloud is None else f"{c.aoi_cloud:5.1f} %"
            cloud = "n/a" if c.cloud is None else f"{c.cloud:5.1f} %"
            print(f"  {c.item.id:<48} {str(c.item.datetime)[:19]}  cloud {cloud}  over the area {aoi}  "
                  f"area covered {100 * c.aoi_covered:5.1f} %")
        chosen.append(write_choice(cands[0], Path(args.out) / f"date{k}_{cands[0].item.id}.json"))
    print("chosen: " + " ".join(map(str, chosen)))
    if len(chosen) == 2:
        where = f"--bbox {','.join(f'{v:g}' for v in bbox)}" if args.bbox else f"--aoi {args.aoi}"
        print(f"next: changekit scene --t1 {chosen[0]} --t2 {chosen[1]} --model s2-urban-13band {where} --out OUT")
    return 0
