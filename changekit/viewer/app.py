"""The map viewer's server: a small Starlette (ASGI) app over one finished ``changekit scene`` output folder.

Routes (nothing else; no URL part reaches the file system, every file it reads is named here or in
``scene.json``):

* ``/``: the page (``static/index.html``), ``/static/...``: its script, style and the vendored MapLibre;
* ``/tiles/{layer}/{z}/{x}/{y}.png``: web-mercator XYZ tiles rendered on the fly with rio-tiler from the
  GeoTIFFs in whatever CRS they are: ``t1``, ``t2`` (the model's bands, first three as RGB, stretched as the
  model saw them), ``change`` (changed pixels in red), ``probability`` (a colour ramp, transparent where low);
  for a segmentation run ``image``, ``classes`` (the class palette) and ``confidence`` (the ramp).
  Tiles outside the scene answer ``204 No Content``;
* ``/polygons.geojson``: the change (or class) polygons in EPSG:4326, also served under the name of the file they
  come from (``/changes.geojson``, or ``/classes.geojson`` for a segmentation run); ``/scene.json``: the run's
  record plus its bounds and layers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from changekit.errors import ConfigError

__all__ = ["create_app", "check_scene_folder", "LAYERS"]

#: the tile layers of a run, by task: input images first, then the outputs (file names without ``.tif``)
LAYERS = {"change": ("t1", "t2", "change", "probability"), "segmentation": ("image", "classes", "confidence")}
STATIC = Path(__file__).parent / "static"
#: the deepest web-mercator zoom served (about 0.15 m pixels at the equator; deeper asks are not tiles)
MAX_ZOOM = 30


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _nums(v: Any, n: int | None = None) -> bool:
    return isinstance(v, list) and bool(v) and (n is None or len(v) == n) and all(_num(x) for x in v)


def _band_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in v)


def _display(v: Any) -> bool:
    return isinstance(v, dict) and (v.get("bands") is None or _band_list(v["bands"])) and (
        v.get("ranges") is None or (isinstance(v["ranges"], list) and all(_nums(r, 2) for r in v["ranges"])))


def _scaling(v: Any) -> bool:
    return (isinstance(v, dict) and _nums(v.get("gain")) and _nums(v.get("offset"))
            and len(v["gain"]) == len(v["offset"]) and all(g != 0 for g in v["gain"]))


def _file_names(v: Any) -> bool:  # output files live in the run's folder: plain names, nothing that leaves it
    return isinstance(v, dict) and all(isinstance(n, str) and n and Path(n).name == n and n not in (".", "..")
                                       for n in v.values())


#: what the viewer reads from scene.json: key -> (check, what it must be); required unless marked optional
RECORD = {
    "task": (lambda v: isinstance(v, str) and v in LAYERS, f"one of {', '.join(LAYERS)}", False),
    "t1": (lambda v: isinstance(v, str) and bool(v), "the path of date 1", False),
    "t2": (lambda v: isinstance(v, str) and bool(v), "the path of date 2", False),
    "image": (lambda v: isinstance(v, str) and bool(v), "the path of the image", False),
    "bands": (_band_list, "a list of 1-based band numbers", False),
    "train_range": (lambda v: _nums(v, 2), "[min, max]", False),
    "scaling": (_scaling, "{gain: [...], offset: [...]} with non-zero gains", False),
    "outputs": (_file_names, "a mapping of outputs to file names in the folder", False),
    "crs": (lambda v: v is None or isinstance(v, str), "a CRS string or null", True),
    "display": (_display, "{bands: [...], ranges: [[lo, hi], ...]}", True),
    "palette": (lambda v: v is None or (isinstance(v, list) and all(_nums(c, 3) for c in v)), "a list of [r, g, b]",
                True),
}


def _read_record(path: Path) -> dict[str, Any]:
    """scene.json, checked key by key: a record edited or damaged by hand is named, not a server error later."""
    fix = "rerun the scene command with --restart to write it again"
    try:
        record = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({type(e).__name__}); {fix}") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{path}: holds a {type(record).__name__}, not a scene record; {fix}")
    record.setdefault("task", "change")  # records written before segmentation runs had no task
    ok, what, _ = RECORD["task"]
    if not ok(record["task"]):
        raise ConfigError(f"{path}: task is {record['task']!r}, not {what}; {fix}")
    needed = {*LAYERS[record["task"]][:-2], "bands", "train_range", "scaling", "outputs"}
    for key, (ok, what, optional) in RECORD.items():
        if key not in record:
            if key in needed:
                raise ConfigError(f"{path}: no {key!r}; {fix}")
            continue
        if key not in needed and not optional:
            continue
        if not ok(record[key]) and not (optional and record[key] is None):
            raise ConfigError(f"{path}: {key} is {record[key]!r}, not {what}; {fix}")
    return record


def check_scene_folder(out: str | Path) -> dict[str, Any]:
    """The ``scene.json`` of a finished scene run in ``out``; :class:`ConfigError` naming what is missing."""
    out = Path(out)
    if not out.is_dir():
        raise ConfigError(f"{out}: no such folder; give the --out folder of a `changekit scene` run")
    record = _read_record(out / "scene.json") if (out / "scene.json").is_file() else {}
    task = record.get("task", "change")
    inputs, outputs = LAYERS[task][:-2], LAYERS[task][-2:]
    missing = [n for n in ("scene.json", *(f"{k}.tif" for k in outputs)) if not (out / n).is_file()]
    if missing:
        unfinished = " (it holds an unfinished run: rerun the scene command to finish it)" if (out / ".partial").exists() else ""
        raise ConfigError(f"{out} is not a finished `changekit scene` output: {', '.join(missing)} missing{unfinished}")
    for key in inputs:
        if not Path(record[key]).is_file():
            what = "image" if key == "image" else f"date {key[1]}"
            raise ConfigError(f"{out / 'scene.json'}: {what} {record[key]} no longer exists; the viewer shows the "
                              "images the scene was run on")
    return record


def _display_ranges(record: dict[str, Any]) -> list[tuple[float, float]]:
    """Stored values that the model's scaling mapped onto its training range: shown as black..white."""
    lo, hi = record["train_range"]
    sc = record["scaling"]
    return [((lo - o) / g, (hi - o) / g) for g, o in zip(sc["gain"], sc["offset"])][:3]


def _ramp() -> dict[int, tuple[int, int, int, int]]:
    """Probability 0..255 -> yellow (low) .. red (high), transparent below 0.3."""
    cmap = {}
    for v in range(256):
        p = v / 255.0
        a = 0 if p < 0.3 else int(90 + 165 * (p - 0.3) / 0.7)
        cmap[v] = (255, int(230 * (1 - p)), 0, a)
    return cmap


def _date_colours(n: int) -> list[tuple[int, int, int]]:
    """One colour per date, early blue .. late yellow (viridis' ends and middle), for the first-change map."""
    stops = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], float)
    at = np.linspace(0, 1, len(stops))
    return [tuple(int(round(np.interp(v, at, stops[:, c]))) for c in range(3)) for v in np.linspace(0, 1, max(n, 2))[:n]]


def _image_style(record: dict[str, Any]) -> tuple[list[int], list[tuple[float, float]]]:
    """The bands shown as RGB and their stretch: Sentinel-2 true colour where recorded, else the training range."""
    display = record.get("display") or {}
    bands = list(display.get("bands") or record["bands"])[:3]
    bands = (bands * 3)[:3]  # one- or two-band data: shown grey
    ranges = [tuple(r) for r in display["ranges"]] if display.get("ranges") else _display_ranges(record)
    return bands, (ranges * 3)[:3]


def _scene_layers(out: Path) -> tuple[dict[str, Any], dict[str, tuple[Path, str]], dict[str, dict]]:
    """A scene run: its record, layer -> (file, style), and the colour maps."""
    record = check_scene_folder(out)
    task = record.get("task", "change")
    layers = LAYERS[task]
    files = {k: (Path(record[k]), "image") for k in layers[:-2]}
    styles = ("change", "ramp") if task == "change" else ("classes", "ramp")
    files |= {k: (out / f"{k}.tif", style) for k, style in zip(layers[-2:], styles)}
    cmaps = {"change": {0: (0, 0, 0, 0), 1: (230, 25, 25, 210), 255: (0, 0, 0, 0)},
             "classes": {i: (*map(int, c), 255) for i, c in enumerate(record.get("palette") or [])} | {255: (0, 0, 0, 0)}}
    return {**record, "task": task, "layers": list(layers)}, files, cmaps


def _timeline_layers(out: Path) -> tuple[dict[str, Any], dict[str, tuple[Path, str]], dict[str, dict]]:
    """A timeline run: every date (as its pairs read it), first/last change coloured by date, the change count."""
    from changekit.geo.timeline import NODATA

    path = out / "timeline.json"
    fix = "rerun the timeline command to write it again"
    try:
        record = json.loads(path.read_bytes())
        dates, pairs, outputs = record["dates"], record["pairs"], record["outputs"]
        labels = [str(d["label"]) for d in dates]
        folders = [out / str(p["folder"]) for p in pairs]
        assert isinstance(outputs, dict) and _file_names(outputs) and len(folders) == len(dates) - 1
        assert all(f.resolve().is_relative_to(out) for f in folders)
    except (OSError, ValueError, KeyError, TypeError, AssertionError, AttributeError):
        raise ConfigError(f"{path}: not a timeline record changekit can read; {fix}") from None
    missing = [n for n in ("first_change.tif", "last_change.tif", "n_changes.tif") if not (out / n).is_file()]
    missing += [str(f / "scene.json") for f in folders if not (f / "scene.json").is_file()]
    if missing:
        raise ConfigError(f"{out} is not a finished `changekit timeline` output: {', '.join(missing)} missing")
    pair_records = [_read_record(f / "scene.json") for f in folders]
    # date 1 as the first pair read it, date k as the pair ending at k read it (a VRT for band folders and Items)
    images = [Path(pair_records[0]["t1"])] + [Path(r["t2"]) for r in pair_records]
    gone = [str(p) for p in images if not p.is_file()]
    if gone:
        raise ConfigError(f"{path}: date(s) {', '.join(gone)} no longer exist; the viewer shows the dates the "
                          "timeline was run on")
    files = {f"date{k:02d}": (p, "image") for k, p in enumerate(images, start=1)}
    files |= {"first_change": (out / "first_change.tif", "dates"), "last_change": (out / "last_change.tif", "dates"),
              "n_changes": (out / "n_changes.tif", "count")}
    colours = _date_colours(len(dates))
    dates_cmap = {k: (*colours[k - 1], 230) for k in range(2, len(dates) + 1)} | {0: (0, 0, 0, 0), NODATA: (0, 0, 0, 0)}
    count_cmap = {n: (255, int(200 * (1 - n / max(1, len(pairs)))), 0, 230) for n in range(1, len(pairs) + 1)}
    count_cmap |= {0: (0, 0, 0, 0), NODATA: (0, 0, 0, 0)}
    first = pair_records[0]
    shown = {**record, "task": "timeline", "labels": labels, "colours": [list(c) for c in colours],
             "layers": list(files), "bands": first["bands"], "display": first.get("display"),
             "scaling": first["scaling"], "train_range": first["train_range"], "window": first.get("window"),
             "threshold": pairs[0].get("threshold")}
    return shown, files, {"dates": dates_cmap, "count": count_cmap}


def create_app(out: str | Path):
    """The viewer app for the ``changekit scene`` or ``changekit timeline`` output folder ``out`` (checked first)."""
    from rio_tiler.errors import TileOutsideBounds
    from rio_tiler.io import Reader
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    out = Path(out).resolve()
    timeline = (out / "timeline.json").is_file() and not (out / "scene.json").is_file()
    record, files, cmaps = _timeline_layers(out) if timeline else _scene_layers(out)
    bands, ranges = _image_style(record)
    cmaps["ramp"] = _ramp()
    reference = next(path for path, style in files.values() if style != "image")
    with Reader(str(reference)) as src:
        bounds = list(src.get_geographic_bounds("epsg:4326"))

    async def tile(request):
        layer = request.path_params["layer"]
        if layer not in files:
            return Response(status_code=404)
        z, x, y = (int(request.path_params[k]) for k in ("z", "x", "y"))
        if not (0 <= z <= MAX_ZOOM and 0 <= x < 2**z and 0 <= y < 2**z):  # no such tile on the web-mercator grid
            return Response(status_code=404)
        path, style = files[layer]
        try:
            with Reader(str(path)) as src:
                if style == "image":
                    img = src.tile(x, y, z, indexes=bands, tilesize=256)
                    img.rescale(in_range=ranges)
                    content = img.render(img_format="PNG")
                else:  # maps by value (nearest: a class or a date is not averaged); the probability ramp
                    img = src.tile(x, y, z, indexes=1, **({} if style == "ramp" else {"resampling_method": "nearest"}))
                    content = img.render(img_format="PNG", colormap=cmaps[style])
        except TileOutsideBounds:
            return Response(status_code=204)
        return Response(content, media_type="image/png", headers={"Cache-Control": "no-cache"})

    async def polygons(request):
        name = record["outputs"].get("geojson")
        if name is None or not (out / name).is_file():  # a run with --no-vectors
            return JSONResponse({"type": "FeatureCollection", "features": []})
        return JSONResponse(_to_wgs84(out / name, record.get("crs")))

    async def scene(request):
        return JSONResponse({**record, "bounds": bounds})

    async def index(request):
        return FileResponse(STATIC / "index.html")

    own = "/classes.geojson" if record["task"] == "segmentation" else "/changes.geojson"  # the file's own name
    routes = [
        Route("/", index),
        Route("/scene.json", scene),
        Route("/polygons.geojson", polygons),
        Route(own, polygons),
        Route("/tiles/{layer:str}/{z:int}/{x:int}/{y:int}.png", tile),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes)


def _to_wgs84(path: Path, crs: str | None) -> dict[str, Any]:
    """The polygons of ``path`` in EPSG:4326 (as GeoJSON wants), each with its area and a rank by area."""
    from rasterio.warp import transform_geom

    data = json.loads(path.read_text())
    feats = data.get("features", [])
    if crs:
        for f in feats:
            f["geometry"] = transform_geom(crs, "EPSG:4326", f["geometry"])
    feats.sort(key=lambda f: -float(f.get("properties", {}).get("area", 0.0)))
    for i, f in enumerate(feats):
        f.setdefault("properties", {})["rank"] = i + 1
    return {"type": "FeatureCollection", "features": feats, "crs_note": "EPSG:4326" if crs else "pixel coordinates"}
