"""Change polygons from the change raster, block by block (memory bounded by the block, not the scene).

Each block is polygonised with ``rasterio.features.shapes`` in pixel coordinates (4-connectivity, as
GDAL's polygonize). Polygons that touch an inner block edge are kept aside and merged at the end
(``shapely.unary_union``, then split into parts); the others are final at once. Final polygons are mapped
to the raster's CRS with its geotransform, filtered by ``min_area`` (CRS units squared), optionally
simplified, and written to GeoJSON and GeoPackage with ``id``, ``area`` and ``pixels`` attributes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fiona
import numpy as np
import rasterio
import shapely
from rasterio.features import shapes
from rasterio.transform import Affine
from rasterio.windows import Window
from shapely.geometry import mapping, shape

__all__ = ["change_polygons", "write_polygons"]

SCHEMA = {"geometry": "Polygon", "properties": {"id": "int", "area": "float", "pixels": "int"}}


def _parts(geom) -> Iterator:
    if geom.is_empty:
        return
    if geom.geom_type == "Polygon":
        yield geom
    elif hasattr(geom, "geoms"):
        for g in geom.geoms:
            yield from _parts(g)


def change_polygons(change_path: str | Path, block: int = 2048) -> Iterator[tuple[object, int]]:
    """Yield ``(polygon in CRS coordinates, pixel count)`` for every 4-connected region of value 1."""
    with rasterio.open(change_path) as ds:
        H, W, T = ds.height, ds.width, ds.transform
        coeffs = [T.a, T.b, T.d, T.e, T.c, T.f]
        pending = []
        for y0 in range(0, H, block):
            for x0 in range(0, W, block):
                h, w = min(block, H - y0), min(block, W - x0)
                arr = ds.read(1, window=Window(x0, y0, w, h))
                m = arr == 1
                if not m.any():
                    continue
                for geom, _ in shapes(arr, mask=m, connectivity=4, transform=Affine.translation(x0, y0)):
                    poly = shape(geom)
                    minx, miny, maxx, maxy = poly.bounds
                    inner = (minx == x0 and x0 > 0) or (miny == y0 and y0 > 0) or \
                            (maxx == x0 + w and x0 + w < W) or (maxy == y0 + h and y0 + h < H)
                    if inner:
                        pending.append(poly)
                    else:
                        yield shapely.affinity.affine_transform(poly, coeffs), int(round(poly.area))
        if pending:
            for poly in _parts(shapely.unary_union(pending)):
                yield shapely.affinity.affine_transform(poly, coeffs), int(round(poly.area))


def write_polygons(change_path: str | Path, outputs: dict[str, Path], min_area: float = 0.0,
                   simplify: float | None = None) -> dict:
    """Write the change polygons to each ``{driver: path}`` (``GeoJSON``, ``GPKG``). Returns counts."""
    with rasterio.open(change_path) as ds:
        crs_wkt = ds.crs.to_wkt() if ds.crs else None
    sinks = []
    counts = {"polygons": 0, "dropped_small": 0, "area": 0.0}
    try:
        for driver, path in outputs.items():
            kw = {"layer": "changes"} if driver == "GPKG" else {}
            sinks.append(fiona.open(path, "w", driver=driver, schema=SCHEMA, crs_wkt=crs_wkt, **kw))
        for poly, pixels in change_polygons(change_path):
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
            rec = {"geometry": mapping(poly), "properties": {"id": counts["polygons"], "area": area, "pixels": pixels}}
            for s in sinks:
                s.write(rec)
    finally:
        for s in sinks:
            s.close()
    return counts


def pixel_area(transform) -> float:
    return float(abs(np.linalg.det(np.array([[transform.a, transform.b], [transform.d, transform.e]]))))
