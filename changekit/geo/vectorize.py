"""Polygons from the change raster (or a class raster), block by block (memory bounded by the block, not the scene).

Each block is polygonised with ``rasterio.features.shapes`` in pixel coordinates (4-connectivity, as
GDAL's polygonize). Polygons that touch an inner block edge are kept aside and merged at the end, value by
value (``shapely.unary_union``, then split into parts); the others are final at once. Final polygons are mapped
to the raster's CRS with its geotransform, filtered by ``min_area`` (CRS units squared), optionally
simplified, and written to GeoJSON and GeoPackage with ``id``, ``area`` (CRS units²), ``area_m2`` and ``pixels`` attributes, and for a
class raster ``class`` (the index) and ``class_name``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import fiona
import numpy as np
import rasterio
import shapely
from rasterio.features import shapes
from rasterio.transform import Affine
from rasterio.windows import Window
from shapely.geometry import mapping, shape

__all__ = ["change_polygons", "region_polygons", "write_polygons", "polygons_into"]

SCHEMA = {"geometry": "Polygon", "properties": {"id": "int", "area": "float", "area_m2": "float", "pixels": "int"}}
CLASS_SCHEMA = {"geometry": "Polygon",
                "properties": {"id": "int", "class": "int", "class_name": "str", "area": "float", "area_m2": "float",
                               "pixels": "int"}}


def _parts(geom) -> Iterator:
    if geom.is_empty:
        return
    if geom.geom_type == "Polygon":
        yield geom
    elif hasattr(geom, "geoms"):
        for g in geom.geoms:
            yield from _parts(g)


def region_polygons(path: str | Path, values: Sequence[int], block: int = 2048) -> Iterator[tuple[object, int, int]]:
    """Yield ``(polygon in CRS coordinates, pixel count, value)`` for every 4-connected region of each of ``values``."""
    wanted = np.asarray(list(values))
    with rasterio.open(path) as ds:
        H, W, T = ds.height, ds.width, ds.transform
        coeffs = [T.a, T.b, T.d, T.e, T.c, T.f]
        pending: dict[int, list] = {}
        for y0 in range(0, H, block):
            for x0 in range(0, W, block):
                h, w = min(block, H - y0), min(block, W - x0)
                arr = ds.read(1, window=Window(x0, y0, w, h))
                m = np.isin(arr, wanted)
                if not m.any():
                    continue
                for geom, value in shapes(arr, mask=m, connectivity=4, transform=Affine.translation(x0, y0)):
                    poly, value = shape(geom), int(value)
                    minx, miny, maxx, maxy = poly.bounds
                    inner = (minx == x0 and x0 > 0) or (miny == y0 and y0 > 0) or \
                            (maxx == x0 + w and x0 + w < W) or (maxy == y0 + h and y0 + h < H)
                    if inner:
                        pending.setdefault(value, []).append(poly)
                    else:
                        yield shapely.affinity.affine_transform(poly, coeffs), int(round(poly.area)), value
        for value in sorted(pending):
            for poly in _parts(shapely.unary_union(pending[value])):
                yield shapely.affinity.affine_transform(poly, coeffs), int(round(poly.area)), value


def change_polygons(change_path: str | Path, block: int = 2048) -> Iterator[tuple[object, int]]:
    """Yield ``(polygon in CRS coordinates, pixel count)`` for every 4-connected region of value 1."""
    for poly, pixels, _ in region_polygons(change_path, [1], block):
        yield poly, pixels


def write_polygons(change_path: str | Path, outputs: dict[str, Path], min_area: float = 0.0,
                   simplify: float | None = None, class_names: Sequence[str] | None = None,
                   regions_of: tuple[Sequence[int], dict[str, str], Callable[[int], dict]] | None = None) -> dict:
    """Write the change polygons (value 1 of ``change_path``) to each ``{driver: path}`` (``GeoJSON``, ``GPKG``);
    with ``class_names``, the regions of every class of a class raster instead (layer ``classes``, with the class
    index and name); with ``regions_of`` = (values, their attributes' schema, value -> attributes), the regions of
    those values of any raster (layer ``changes``: a timeline's first/last/n). Returns counts."""
    attributes = None
    if regions_of is not None:
        values, extra, attributes = regions_of
        schema = {"geometry": "Polygon", "properties": {**SCHEMA["properties"], **extra}}
        layer, regions = "changes", region_polygons(change_path, values)
    elif class_names is None:
        schema, layer, regions = SCHEMA, "changes", region_polygons(change_path, [1])
    else:
        schema, layer, regions = CLASS_SCHEMA, "classes", region_polygons(change_path, range(len(class_names)))
    with rasterio.open(change_path) as ds:
        crs_wkt = ds.crs.to_wkt() if ds.crs else None
        square_metres = metric_area(ds.crs)
    sinks, batch = [], []
    counts = {"polygons": 0, "dropped_small": 0, "area": 0.0}
    try:
        for driver, path in outputs.items():
            kw = {"layer": layer} if driver == "GPKG" else {}
            sinks.append(fiona.open(path, "w", driver=driver, schema=schema, crs_wkt=crs_wkt, **kw))
        for poly, pixels, value in regions:
            area = float(poly.area)
            if area < min_area:
                counts["dropped_small"] += 1
                continue
            if simplify:
                poly = poly.simplify(simplify, preserve_topology=True)
                if poly.is_empty:
                    counts["dropped_small"] += 1
                    continue
            if not poly.is_valid:
                poly = next(iter(sorted(_parts(shapely.make_valid(poly)), key=lambda g: -g.area)), poly)
            counts["polygons"] += 1
            counts["area"] += area
            props = {"id": counts["polygons"], "area": area, "area_m2": square_metres(poly), "pixels": pixels}
            if class_names is not None:
                props.update({"class": value, "class_name": class_names[value]})
            if attributes is not None:
                props.update(attributes(value))
            batch.append({"geometry": mapping(poly), "properties": props})
            if len(batch) >= 2000:  # fiona's per-call cost dominates one record at a time (measured 3x)
                for s in sinks:
                    s.writerecords(batch)
                batch = []
        for s in sinks:
            s.writerecords(batch)
    finally:
        for s in sinks:
            s.close()
    return counts


def metric_area(crs):
    """``polygon -> area in m²`` for polygons in ``crs``: CRS units² scaled to metres in a projected CRS, the
    geodesic area on the CRS's ellipsoid in a geographic one (OSCD's EPSG:4326 rasters), None without a CRS."""
    if crs is None:
        return lambda poly: None
    if crs.is_geographic:
        from pyproj import CRS, Geod

        geod = CRS.from_wkt(crs.to_wkt()).get_geod() or Geod(ellps="WGS84")
        return lambda poly: abs(geod.geometry_area_perimeter(poly)[0])
    try:
        factor = float(crs.linear_units_factor[1])
    except Exception:  # a CRS whose unit rasterio cannot tell
        return lambda poly: None
    return lambda poly: poly.area * factor * factor


def pixel_area(transform) -> float:
    return float(abs(np.linalg.det(np.array([[transform.a, transform.b], [transform.d, transform.e]]))))


def polygons_into(raster: str | Path, out: Path, names: tuple[str, str], staging: Path, **kw) -> tuple[dict, dict]:
    """:func:`write_polygons` of ``raster`` as ``names`` (GeoJSON, GeoPackage) written under ``staging`` and renamed
    into ``out`` once complete (never half-written there). Returns the counts and ``{"geojson": path, "gpkg": path}``."""
    import os

    staged = {"GeoJSON": staging / names[0], "GPKG": staging / names[1]}
    for p in staged.values():
        p.unlink(missing_ok=True)  # a leftover of an interrupted run: the GeoPackage driver will not overwrite it
    counts = write_polygons(raster, staged, **kw)
    for p in staged.values():
        os.replace(p, out / p.name)
    return counts, {"geojson": out / names[0], "gpkg": out / names[1]}
