"""``changekit timeline``: change over N dates -- when each place changed, how often -- from a bi-temporal model.

The series D1..DN is cut into pairs (``consecutive``: D1->D2, D2->D3 ...; ``first``: D1->Dk), each run as a scene of
its own under ``DIR/pairs/<k>/`` (streamed, blended, resumable, shardable, any model ``scene`` runs; a pair already
finished is never run again). The pairs' change maps are then combined block by block on D1's grid (memory
bounded by the block and N, not the scene) into

* ``first_change.tif`` / ``last_change.tif``: the 1-based index k of the date at which change was first / last seen
  (the later date of the pair D(k-1)->Dk, or Dk of D1->Dk), 0 = never; ``n_changes.tif``: how many pairs changed;
  uint16 COGs, no data (65535) where any pair has none;
* ``changes.geojson`` / ``changes.gpkg``: one polygon per region of equal (first, last, n), with those attributes,
  the dates' labels and ``area_m2``;
* ``timeline.json``: the dates, their labels, the pairs, the options and the outputs.

``min_persistence`` K removes flicker: with consecutive pairs a change counts only if the next K-1 pairs do not change
again; with ``first`` pairs only if D1->Dk and the next K-1 pairs all changed (dates past the end do not object).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from changekit.atomic import atomic_write, write_json
from changekit.errors import ConfigError, DataError
from changekit.geo.options import SceneOptions
from changekit.geo.record import OutputLock, model_fingerprint, prepare_out

__all__ = ["run_timeline", "read_date_list", "combine_pairs", "PAIRS", "NODATA"]

PAIRS = ("consecutive", "first")
NODATA = 65535


def read_date_list(dates: Sequence[str | Path]) -> list[str]:
    """The dates: paths as given, or one text file (``.txt``) listing them a line each (``#`` comments)."""
    dates = [str(d) for d in dates]
    if len(dates) == 1 and dates[0].lower().endswith(".txt"):
        listing = Path(dates[0])
        if not listing.is_file():
            raise DataError(f"--dates {listing}: no such file")
        lines = [ln.split("#", 1)[0].strip() for ln in listing.read_text().splitlines()]
        dates = [str(listing.parent / ln) if not Path(ln).is_absolute() else ln for ln in lines if ln]
    return dates


def _labels(labels: Sequence[str] | None, n: int) -> list[str]:
    if labels is None:
        return [str(k) for k in range(1, n + 1)]
    labels = [str(v) for v in labels]
    if len(labels) != n:
        raise ConfigError(f"--labels: {len(labels)} label(s) for {n} dates; give one per date, in time order")
    try:
        keys: list[Any] = [float(v) for v in labels]
    except ValueError:
        keys = labels  # ISO dates (2019-06-01) sort as text
    bad = next((k for k in range(1, n) if not keys[k - 1] < keys[k]), None)
    if bad is not None:
        raise ConfigError(f"--labels: {labels[bad - 1]!r} then {labels[bad]!r} is not in time order; give the dates "
                          "oldest first, each label after the one before")
    return labels


def _check_dates(dates: list[str], align: bool) -> None:
    """Every date there, in date 1's data type and bands, on date 1's grid (unless ``align``): one line naming the
    date. Sentinel-2 band folders and STAC Items are checked by each pair's scene run."""
    import rasterio

    from changekit.geo.inputs import _describe_grid, _same_grid

    with contextlib.ExitStack() as stack:
        d1 = None  # the first raster date, open while the others are compared with it
        for k, path in enumerate(dates, start=1):
            p = Path(path)
            if "://" not in path and not path.startswith("/vsi") and not p.exists():
                raise DataError(f"date {k} {path}: no such file; the timeline needs every date (give it again, or "
                                "--restart with the dates you have)")
            if p.is_dir() or p.suffix.lower() == ".json":
                continue
            try:
                ds = stack.enter_context(rasterio.open(path))
            except rasterio.errors.RasterioError as e:
                raise DataError(f"date {k} {path}: not a raster that GDAL/rasterio can open ({e})") from None
            if d1 is None:
                d1 = ds
                continue
            if (ds.dtypes[0], ds.count) != (d1.dtypes[0], d1.count):
                raise DataError(f"date {k} {path} holds {ds.count} band(s) of {ds.dtypes[0]}, date 1 {d1.name} "
                                f"{d1.count} of {d1.dtypes[0]}: the dates must be in the same units; convert them to "
                                "one data type and band set")
            if not align and not _same_grid(d1, ds):
                raise DataError(f"date {k} {path} is not on date 1's grid ({_describe_grid(ds)}; date 1: "
                                f"{_describe_grid(d1)}); pass --align to warp each date onto the grid of the date "
                                "before it, or co-register them first")
            ds.close()


def _pairs(n: int, how: str) -> list[tuple[int, int]]:
    """(a, b) 1-based date indices of each pair; the pair's date index (what the outputs record) is b."""
    if how not in PAIRS:
        raise ConfigError(f"--pairs {how!r}: use consecutive (D1->D2, D2->D3 ...) or first (D1->Dk)")
    return [(k - 1, k) if how == "consecutive" else (1, k) for k in range(2, n + 1)]


def _finished(pair_dir: Path, want: dict[str, Any]) -> bool:
    """A pair already run with the same dates and settings (kept), or none (run); other settings are refused."""
    record = pair_dir / "pair.json"
    if not (record.is_file() and (pair_dir / "change.tif").is_file() and (pair_dir / "scene.json").is_file()):
        return False
    try:
        have = json.loads(record.read_text())
    except (OSError, ValueError):
        return False  # damaged: run it again
    differ = [k for k in want if have.get(k) != want[k]]
    if differ:
        raise ConfigError(f"{pair_dir} holds a finished pair run with other {', '.join(differ)}; rerun with the same "
                          "dates and settings, or pass --restart to start the timeline over")
    return True


def combine_pairs(pair_maps: Sequence[Path], grid: tuple, how: str, min_persistence: int, block: int = 512):
    """Yield ``(window, first, last, n, nodata)`` blocks on ``grid`` (crs, transform, width, height) from the
    pairs' change maps (0/1, 255 no data), each read onto the grid (nearest) when it lies on another."""
    import rasterio
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

    crs, transform, width, height = grid
    P = len(pair_maps)
    with contextlib.ExitStack() as stack:
        srcs = []
        for path in pair_maps:
            ds = stack.enter_context(rasterio.open(path))
            if (ds.crs, ds.transform, ds.width, ds.height) != (crs, transform, width, height):
                ds = stack.enter_context(WarpedVRT(ds, crs=crs, transform=transform, width=width, height=height,
                                                   resampling=rasterio.enums.Resampling.nearest, nodata=255))
            srcs.append(ds)
        idx = np.arange(2, P + 2, dtype=np.uint16)[:, None, None]  # the date index of each pair
        for y0 in range(0, height, block):
            for x0 in range(0, width, block):
                win = Window(x0, y0, min(block, width - x0), min(block, height - y0))
                c = np.stack([ds.read(1, window=win) for ds in srcs])
                nodata = (c == 255).any(axis=0)
                event = c == 1
                kept = event.copy()
                for j in range(1, min_persistence):  # flicker: the change must hold for K dates
                    later = np.concatenate([event[j:], np.zeros_like(event[:j])]) if how == "consecutive" else \
                        np.concatenate([event[j:], np.ones_like(event[:j])])
                    kept &= ~later if how == "consecutive" else later
                n = kept.sum(axis=0).astype(np.uint16)
                first = np.where(kept, idx, np.uint16(NODATA)).min(axis=0)
                first[n == 0] = 0
                last = np.where(kept, idx, 0).max(axis=0).astype(np.uint16)
                for a in (first, last, n):
                    a[nodata] = NODATA
                yield win, first, last, n, nodata


@dataclass
class _Job:
    """One timeline run: the series, how to cut and combine it, and the options every pair's scene run gets."""

    dates: list[str]
    out: Path
    labels: list[str]
    plan: list[tuple[int, int]]
    pair_mode: str
    min_persistence: int
    threshold: float | None
    pair_rasters: bool
    vectors: bool
    min_area: float
    simplify: float | None
    align: bool
    restart: bool
    log: Callable[[str], Any]
    scene_options: dict[str, Any]  # as given: what a finished pair records (_settings)
    options: SceneOptions  # what every pair runs with (scene_options checked once)


def run_timeline(dates: Sequence[str | Path], out_dir: str | Path, *, labels: Sequence[str] | None = None,
                 pairs: str = "consecutive", min_persistence: int = 1, threshold: float | None = None,
                 pair_rasters: bool = True, vectors: bool = True, min_area: float = 0.0, simplify: float | None = None,
                 align: bool = False, pixel_coords: bool = False, restart: bool = False, progress: bool = True,
                 log: Callable[[str], Any] = print, **scene_options: Any) -> dict:
    """Run a change model over every pair of the series ``dates`` (oldest first) and combine the pairs (see the
    module docstring). ``scene_options`` are :func:`changekit.geo.scene.run_scene`'s (``ckpt``, ``model``,
    ``window``, ``overlap``, ``batch_size``, ``device``, ``precision``, ``scale``, ``bands``, ``mean``, ``std``...).
    Returns the summary written to ``timeline.json``."""
    from changekit.geo.distributed import dist_context

    t_start = time.perf_counter()
    dates = read_date_list(dates)
    if len(dates) < 2:
        raise ConfigError(f"--dates: {len(dates)} date(s); a timeline needs two or more, oldest first")
    if not isinstance(min_persistence, int) or min_persistence < 1:
        raise ConfigError(f"--min-persistence {min_persistence!r}: a whole number of dates, 1 or more")
    job = _Job(dates, Path(out_dir), _labels(labels, len(dates)), _pairs(len(dates), pairs), pairs, min_persistence,
               threshold, pair_rasters, vectors, min_area, simplify, align, restart, log,
               scene_options, SceneOptions(threshold=threshold, vectors=False, align=align,
                                           pixel_coords=pixel_coords, progress=progress, **scene_options))
    _check_dates(dates, align)
    dist = dist_context()  # under torchrun every rank runs every pair's strips; rank 0 writes the outputs
    if dist.rank == 0:
        prepare_out(job.out)
    else:
        job.log = lambda *_: None  # rank 0 speaks for all
    try:
        with OutputLock(job.out, held=dist.rank == 0):
            summaries, resumed = _run_pairs(job, dist)
            if dist.rank != 0:
                return {"rank": dist.rank, "pairs": len(job.plan)}
            import rasterio

            from changekit.geo.scene import GDAL_CACHE_MB

            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):  # as the pairs: memory bounded by blocks, not GDAL's cache
                result = _write_outputs(job)
            if not pair_rasters:
                for _, b in job.plan:
                    (job.out / "pairs" / f"{b:02d}" / "probability.tif").unlink(missing_ok=True)
            record = _record(job, summaries, resumed, result, time.perf_counter() - t_start)
            write_json(job.out / "timeline.json", record)
            return record
    finally:
        dist.close()


def _run_pairs(job: _Job, dist) -> tuple[list[dict], int]:
    """Every pair as a scene of its own (a pair finished before is kept): the pairs' records, how many were kept."""
    from changekit.geo.scene import run_scene

    if job.restart and dist.rank == 0:
        for name in ("pairs", ".partial"):
            shutil.rmtree(job.out / name, ignore_errors=True)
    dist.barrier()
    settings = _settings(job.scene_options)
    resumed, summaries = 0, []
    for i, (a, b) in enumerate(job.plan, start=1):
        pair_dir = job.out / "pairs" / f"{b:02d}"
        t1, t2 = job.dates[a - 1], job.dates[b - 1]
        want = {"t1": str(Path(t1).absolute()), "t2": str(Path(t2).absolute()), "threshold": job.threshold,
                "align": job.align, "options": settings}
        what = f"pair {i}/{len(job.plan)}: {job.labels[a - 1]} -> {job.labels[b - 1]}"
        if _finished(pair_dir, want):
            resumed += 1
            job.log(f"{what} finished before, kept")
        else:
            job.log(what)
            s = run_scene(t1, t2, pair_dir, job.options)
            if dist.rank == 0:  # (the other ranks' summaries hold their strips only)
                write_json(pair_dir / "pair.json", want)  # the pair is finished: a rerun keeps it
                job.log(f"  {s['windows']} windows, {s['megapixels_per_s']:.3g} MP/s, {s['changed_pixels']} changed "
                        "pixels")
        summaries.append(json.loads((pair_dir / "scene.json").read_text()))
    return summaries, resumed


def _settings(options: dict[str, Any]) -> dict[str, str]:
    """The scene options as a finished pair records them: a model by its weights' fingerprint, a model file by
    its size and time, the rest as text (so another model, or new weights under one name, is not mistaken)."""
    import os

    import torch.nn as nn

    out = {}
    for k, v in sorted(options.items()):
        if isinstance(v, nn.Module):
            out[k] = model_fingerprint(v)
        elif k in ("ckpt", "config") and v is not None and os.path.isfile(v):
            st = os.stat(v)
            out[k] = f"{os.path.abspath(v)} {st.st_size} {st.st_mtime_ns}"
        else:
            out[k] = str(v)
    return out


def _record(job: _Job, summaries: list[dict], resumed: int, result: dict, seconds: float) -> dict:
    """``timeline.json``: the dates and labels, the pairs, the options, the counts and the outputs."""
    first = summaries[0]
    return {"format": "changekit-timeline/1",
            "dates": [{"index": k, "path": str(Path(d).absolute()), "label": lab}
                      for k, (d, lab) in enumerate(zip(job.dates, job.labels), 1)],
            "pairs": [{"from": a, "to": b, "folder": f"pairs/{b:02d}", "threshold": s.get("threshold")}
                      for (a, b), s in zip(job.plan, summaries)],
            "pair_mode": job.pair_mode, "min_persistence": job.min_persistence, "model": first.get("model"),
            "window": first.get("window"), "overlap": first.get("overlap"), "precision": first.get("precision"),
            **({"precision_reason": first["precision_reason"]} if first.get("precision_reason") else {}),
            "crs": first.get("crs"), "pairs_resumed": resumed, "seconds": round(seconds, 3), **result}


def _write_outputs(job: _Job) -> dict:
    """first_change / last_change / n_changes (COGs) and the polygons, written under ``out/.partial`` and renamed
    into ``out`` when complete."""

    import rasterio

    from changekit.geo.writers import raster_profile, to_cog

    out, dates, labels, plan, log = job.out, job.dates, job.labels, job.plan, job.log

    maps = [out / "pairs" / f"{b:02d}" / "change.tif" for _, b in plan]
    with rasterio.open(maps[0]) as ds:  # the first pair's grid is date 1's (its t1)
        grid = (ds.crs, ds.transform, ds.width, ds.height)
    crs, transform, width, height = grid
    partial = out / ".partial"
    partial.mkdir(exist_ok=True)
    names = ("first_change", "last_change", "n_changes")
    tmp = {k: partial / f"{k}.tif" for k in (*names, "regions")}
    N = len(dates)
    profile = raster_profile(crs, transform, height, width, dtype="uint16", nodata=NODATA)
    counts = {"changed_pixels": 0, "nodata_pixels": 0}
    first_at = np.zeros(N + 1, np.int64)  # pixels first changed at each date index
    keys: set[int] = set()
    log(f"combining {len(plan)} pair(s) on date 1's grid ({height} x {width} px)")
    with rasterio.open(tmp["first_change"], "w", **profile) as f, rasterio.open(tmp["last_change"], "w", **profile) as la, \
            rasterio.open(tmp["n_changes"], "w", **profile) as nn, \
            rasterio.open(tmp["regions"], "w", **{**profile, "dtype": "int32", "nodata": 0, "predictor": 1}) as reg:
        for win, first, last, n, nodata in combine_pairs(maps, grid, job.pair_mode, job.min_persistence):
            f.write(first, 1, window=win)
            la.write(last, 1, window=win)
            nn.write(n, 1, window=win)
            changed = (n > 0) & ~nodata
            key = np.where(changed, (first.astype(np.int64) * (N + 1) + last) * (N + 1) + n, 0).astype(np.int32)
            reg.write(key, 1, window=win)
            keys.update(np.unique(key[changed]).tolist())
            counts["changed_pixels"] += int(changed.sum())
            counts["nodata_pixels"] += int(nodata.sum())
            first_at += np.bincount(first[changed], minlength=N + 1)
        for ds, name in ((f, "first"), (la, "last")):
            ds.set_band_description(1, f"date index of the {name} change seen (0 never; "
                                       + ", ".join(f"{k}={lab}" for k, lab in enumerate(labels, 1)) + ")")
            ds.update_tags(**{f"DATE_{k}": lab for k, lab in enumerate(labels, 1)})
        nn.set_band_description(1, f"number of pairs changed (of {len(plan)})")
    outputs = {}
    for name in names:
        with atomic_write(out / f"{name}.tif") as final:
            to_cog(tmp[name], final)
        outputs[name] = f"{name}.tif"
    result: dict[str, Any] = {**counts, "first_change_pixels": first_at.tolist(),
                              "valid_pixels": width * height - counts["nodata_pixels"]}
    if job.vectors:
        from changekit.geo.vectorize import polygons_into

        def attributes(key: int) -> dict:
            n, rest = key % (N + 1), key // (N + 1)
            first, last = rest // (N + 1), rest % (N + 1)
            return {"first": first, "last": last, "n": n, "first_label": labels[first - 1],
                    "last_label": labels[last - 1]}

        schema = {"first": "int", "last": "int", "n": "int", "first_label": "str", "last_label": "str"}
        vc, written = polygons_into(tmp["regions"], out, ("changes.geojson", "changes.gpkg"), partial,
                                    min_area=job.min_area, simplify=job.simplify,
                                    regions_of=(sorted(keys), schema, attributes))
        outputs.update({k: v.name for k, v in written.items()})
        result.update(polygons=vc["polygons"], polygons_dropped=vc["dropped_small"])
    shutil.rmtree(partial, ignore_errors=True)
    result["outputs"] = outputs
    return result
