"""Sentinel-2 dates as STAC Items: the model's bands found in an Item's assets, stacked on one grid as a GDAL VRT
that reads the assets window by window (local files, ``/vsicurl/`` or ``/vsis3/``: nothing is downloaded whole),
cropped to an area of interest, with a cloud/no-data mask from the Item's scene classification (SCL) or any
mask asset.

Items are read with ``pystac``. A model band (``B04``) is matched to an asset by the asset's ``eo:bands`` /
``bands`` names, its key (``B04``, ``B04_10m``) or the band's common name (``red``), so the L1C and L2A naming of
Earth Search, Planetary Computer and Copernicus catalogues all work.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from changekit.data.sentinel2 import RESOLUTION, resolve_band_names, stack_vrt, with_mask
from changekit.errors import ConfigError, DataError

__all__ = ["COMMON_NAMES", "SCL_CLASSES", "SCL_MASKED", "StacOptions", "is_stac_item", "read_item", "item_level",
           "band_assets", "asset_path", "parse_mask", "aoi_bounds", "stac_inputs"]

#: Sentinel-2 band -> its STAC common name (eo extension)
COMMON_NAMES = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge", "B06": "rededge",
                "B07": "rededge", "B08": "nir", "B8A": "nir08", "B09": "nir09", "B10": "cirrus", "B11": "swir16",
                "B12": "swir22"}
#: Earth Search's asset keys for the bands whose common name several bands share
_EARTH_SEARCH_KEYS = {"B05": "rededge1", "B06": "rededge2", "B07": "rededge3"}
#: the L2A scene classification's classes (ESA's Sen2Cor)
SCL_CLASSES = {0: "no data", 1: "saturated or defective", 2: "dark area pixels", 3: "cloud shadows",
               4: "vegetation", 5: "not vegetated", 6: "water", 7: "unclassified", 8: "cloud, medium probability",
               9: "cloud, high probability", 10: "thin cirrus", 11: "snow or ice"}
#: masked by ``--mask scl``: no data, saturated, cloud shadow, clouds, cirrus, snow
SCL_MASKED = (0, 1, 3, 8, 9, 10, 11)


@dataclass
class StacOptions:
    """What a scene run does with STAC Items: the area of interest (``bbox`` W,S,E,N in EPSG:4326, or ``aoi`` a
    GeoJSON file), the mask (``scl``, ``scl:0,3,8,9``, ``band:NAME:V1,V2``), and the largest masked fraction of the
    AOI a date may have (``max_masked``) unless ``force``."""

    bbox: Sequence[float] | None = None
    aoi: str | None = None
    mask: str | None = None
    max_masked: float = 0.5
    force: bool = False
    #: filled in by a run: per date, the Item, bands and masked fraction (not a setting: not in repr or equality)
    record: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.bbox is not None and self.aoi is not None:
            raise ConfigError("give --bbox or --aoi, not both")
        if self.bbox is not None:
            self.bbox = _check_bbox(self.bbox)
        if not 0 <= self.max_masked <= 1:
            raise ConfigError(f"--max-masked {self.max_masked}: a fraction between 0 and 1")
        if self.mask is not None:
            parse_mask(self.mask)


def _check_bbox(bbox: Sequence[Any]) -> list[float]:
    try:
        w, s, e, n = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise ConfigError(f"--bbox {bbox!r}: give W,S,E,N in degrees (EPSG:4326), e.g. 2.25,48.81,2.42,48.90") from None
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise ConfigError(f"--bbox {w:g},{s:g},{e:g},{n:g}: W < E within -180..180 and S < N within -90..90 "
                          "(degrees, EPSG:4326)")
    return [w, s, e, n]


def is_stac_item(path: str | os.PathLike) -> bool:
    """A ``.json`` file (or URL) that holds a STAC Item (``"type": "Feature"`` with ``stac_version``)."""
    text = str(path)
    if not text.lower().endswith(".json"):
        return False
    if "://" in text:
        return True
    try:
        with open(text, "rb") as f:
            head = json.loads(f.read(2_000_000))
    except (OSError, ValueError):
        return False
    return isinstance(head, dict) and head.get("type") == "Feature" and "stac_version" in head


def read_item(src: str | os.PathLike):
    """The ``pystac.Item`` at ``src`` (a local file or a URL); one DataError line when it is not one."""
    import pystac

    text = str(src)
    if "://" not in text and not Path(text).is_file():
        raise DataError(f"{text}: no such STAC Item file")
    try:
        item = pystac.Item.from_file(text)
    except Exception as e:  # pystac raises whatever a malformed dict makes Python raise: not an Item either way
        offline = "://" in text and isinstance(e, OSError)
        why = "cannot be fetched (offline? download the Item with `changekit search` first)" if offline else \
            f"is not a STAC Item ({type(e).__name__}: {' '.join(str(e).split())[:160]})"
        raise DataError(f"{text} {why}") from None
    return item


def item_level(item) -> str | None:
    """``L1C`` or ``L2A`` from the Item's processing level, product type or collection; None when none says."""
    props = item.properties
    for key in ("processing:level", "s2:processing_level", "s2:product_type", "sentinel:product_type"):
        v = str(props.get(key) or "").upper()
        if "2A" in v:
            return "L2A"
        if "1C" in v:
            return "L1C"
    coll = str(item.collection_id or "").lower()
    return "L2A" if "l2a" in coll else "L1C" if "l1c" in coll else None


def _asset_band_names(asset) -> list[str]:
    """The band names and common names an asset declares (STAC 1.0 ``eo:bands``, STAC 1.1 ``bands``)."""
    names = []
    declared = [v for k in ("eo:bands", "bands") if isinstance(v := asset.extra_fields.get(k), list)]
    for entry in (e for v in declared for e in v):  # (a malformed entry declares nothing)
        if isinstance(entry, Mapping):
            names += [str(entry[k]) for k in ("name", "common_name", "eo:common_name") if entry.get(k)]
    return names


def _gsd(asset) -> float:
    v = asset.extra_fields.get("gsd")
    return float(v) if isinstance(v, int | float) else math.inf


def band_assets(item, bands: Sequence[str], source: str) -> dict[str, str]:
    """Model band -> asset key, for every band (one DataError naming the missing ones and the assets there are)."""
    matches: dict[str, str] = {}
    raster = {k: a for k, a in item.assets.items() if "data" in (a.roles or ["data"]) and not k.endswith("-jp2")}
    for b in bands:
        ids = {b.lower(), _EARTH_SEARCH_KEYS.get(b, ""), COMMON_NAMES[b] if b not in ("B05", "B06", "B07") else ""}
        found = [k for k, a in raster.items() if b.lower() in {n.lower() for n in _asset_band_names(a)}]
        found = found or [k for k in raster if k.lower() == b.lower() or k.lower().startswith(b.lower() + "_")]
        found = found or [k for k, a in raster.items()
                          if (k.lower() in ids or {n.lower() for n in _asset_band_names(a)} & ids) and k.lower()]
        if found:  # the finest (B02_10m over B02_20m), a COG over a JPEG 2000
            matches[b] = min(found, key=lambda k: (_gsd(raster[k]), "jp2" in (raster[k].media_type or ""), k))
    missing = [b for b in bands if b not in matches]
    if missing:
        raise DataError(f"{source}: no asset for band(s) {', '.join(missing)} (assets: {', '.join(item.assets) or 'none'});"
                        f" the model needs {', '.join(bands)}")
    return matches


def asset_path(item, key: str) -> str:
    """A path GDAL opens for an asset: a local file, ``/vsicurl/https://...`` or ``/vsis3/bucket/key``."""
    href = item.assets[key].get_absolute_href() or item.assets[key].href
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href
    if href.startswith("s3://"):
        return "/vsis3/" + href[len("s3://"):]
    if href.startswith("file://"):
        return href[len("file://"):]
    return href


def parse_mask(spec: str) -> tuple[str, tuple[int, ...]]:
    """``scl`` / ``scl:0,3,8`` -> ("scl", classes); ``band:NAME:V1,V2`` -> (NAME, values)."""
    parts = spec.split(":")
    try:
        if parts[0].lower() == "scl" and len(parts) <= 2:
            values = tuple(int(v) for v in parts[1].split(",")) if len(parts) == 2 else SCL_MASKED
            return "scl", values
        if parts[0].lower() == "band" and len(parts) == 3 and parts[1]:
            return parts[1], tuple(int(v) for v in parts[2].split(","))
    except ValueError:
        pass
    raise ConfigError(f"--mask {spec!r}: use scl (clouds, shadows, cirrus, snow, saturated and no data), scl:CLASSES "
                      "(e.g. scl:0,3,8,9,10) or band:ASSET:VALUES (e.g. band:cloud_mask:1,2)")


def aoi_bounds(options: StacOptions) -> list[float] | None:
    """The area of interest as W,S,E,N in EPSG:4326 (the bounds of an ``--aoi`` GeoJSON's geometries)."""
    if options.aoi is None:
        return options.bbox
    from shapely.geometry import GeometryCollection, shape

    try:
        data = json.loads(Path(options.aoi).read_text())
        feats = data.get("features") or ([data] if data.get("type") == "Feature" else [{"geometry": data}])
        w, s, e, n = GeometryCollection([shape(f["geometry"]) for f in feats]).bounds
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"--aoi {options.aoi}: not a GeoJSON file of polygons in EPSG:4326 ({type(e).__name__})") from None
    return _check_bbox([w, s, e, n])


def _grid(item, key: str, bbox: list[float] | None, source: str) -> tuple:
    """Date 1's grid: its finest band's, cropped to the AOI (rounded out to whole pixels)."""
    import rasterio
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, from_bounds

    path = asset_path(item, key)
    try:
        with rasterio.open(path) as ds:
            crs, transform, width, height = ds.crs, ds.transform, ds.width, ds.height
    except rasterio.errors.RasterioError as e:
        raise DataError(f"{source}: asset {key} ({path}) cannot be read ({' '.join(str(e).split())[:160]})") from None
    if crs is None:
        raise DataError(f"{source}: asset {key} has no georeferencing (no CRS); the Item cannot be placed on a map")
    if bbox is None:
        return crs, transform, width, height
    win = from_bounds(*transform_bounds("EPSG:4326", crs, *bbox, densify_pts=21), transform=transform)
    c0, r0 = max(0, math.floor(win.col_off)), max(0, math.floor(win.row_off))
    c1, r1 = min(width, math.ceil(win.col_off + win.width)), min(height, math.ceil(win.row_off + win.height))
    if c1 <= c0 or r1 <= r0:
        raise DataError(f"{source} does not overlap the area of interest {bbox} (W,S,E,N in EPSG:4326)")
    from rasterio.windows import transform as window_transform

    return crs, window_transform(Window(c0, r0, c1 - c0, r1 - r0), transform), c1 - c0, r1 - r0


def _write_mask(item, stack: str, spec: tuple[str, tuple[int, ...]], grid: tuple, out: Path, source: str) -> float:
    """The date's mask on the grid (255 valid, 0 masked: a masked class, or no data in any band) as a GeoTIFF;
    returns the masked fraction of the grid."""
    import rasterio

    from changekit.atomic import atomic_write

    name, values = spec
    key = next((k for k in item.assets if k.lower() == name.lower()), None)
    if key is None:
        raise DataError(f"{source}: no {name} asset for --mask (assets: {', '.join(item.assets)})"
                        + ("; SCL comes with L2A products" if name == "scl" else ""))
    mask_vrt = stack_vrt({name: asset_path(item, key)}, grid=grid, resampling="nearest", nodata=None)
    crs, transform, width, height = grid
    masked = 0
    profile = dict(driver="GTiff", dtype="uint8", count=1, width=width, height=height, crs=crs, transform=transform,
                   tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    with atomic_write(out) as tmp, rasterio.open(mask_vrt) as m, rasterio.open(stack) as s, \
            rasterio.open(tmp, "w", **profile) as dst:
        for _, win in dst.block_windows(1):
            cls = m.read(1, window=win)
            bad = np.isin(cls, values) | (s.read(window=win) == 0).any(axis=0)
            masked += int(bad.sum())
            dst.write(np.where(bad, 0, 255).astype(np.uint8), 1, window=win)
    return masked / max(1, width * height)


def stac_inputs(paths: Sequence[str], info: Mapping[str, Any], out_dir: Path, options: StacOptions) -> list[str]:
    """Dates given as STAC Items -> VRTs in ``out_dir`` (``t1.vrt``, ``t2.vrt``, with ``t1_mask.tif`` ... under
    ``--mask``) of the model's bands on date 1's grid cropped to the AOI. Checks the product level against the
    model's, every band, georeferencing, the AOI overlap and the masked fraction; records what it did in
    ``options.record``."""
    from changekit.atomic import write_text

    units = info.get("units") or {}
    names, trained = units.get("band_names"), units.get("product")
    flags = ("--image",) if len(paths) == 1 else tuple(f"--t{k}" for k in range(1, len(paths) + 1))
    if not names:
        raise ConfigError(f"{flags[0]} {paths[0]} is a STAC Item, but the model does not record which Sentinel-2 "
                          "bands it takes (changekit's s2- models do)")
    names = list(resolve_band_names(names))
    items = [read_item(p) for p in paths]
    bbox = aoi_bounds(options)
    mask = parse_mask(options.mask) if options.mask else None
    assets = []
    for flag, p, item in zip(flags, paths, items):
        src = f"{flag} {p}"
        level = item_level(item)
        if trained and level and level != trained:
            raise DataError(f"{src} is a Sentinel-2 {level} Item but the model was trained on {trained}; give the "
                            f"{trained} Item of the same date, or a model trained on {level}")
        if bbox is not None and item.geometry is not None:
            from shapely.geometry import box, shape

            if not shape(item.geometry).intersects(box(*bbox)):
                raise DataError(f"{src} does not overlap the area of interest {bbox} (W,S,E,N in EPSG:4326)")
        assets.append(band_assets(item, names, src))
    finest = min(names, key=RESOLUTION.__getitem__)
    grid = _grid(items[0], assets[0][finest], bbox, f"{flags[0]} {paths[0]}")
    out_dir.mkdir(parents=True, exist_ok=True)
    vrts, record = [], {}
    for flag, p, item, keys in zip(flags, paths, items, assets):
        src, stem = f"{flag} {p}", flag.lstrip("-")
        stack = stack_vrt({b: asset_path(item, keys[b]) for b in names}, grid=grid)
        entry = {"item": item.id, "file": str(p), "level": item_level(item), "assets": keys,
                 "datetime": item.datetime.isoformat() if item.datetime else None}
        if mask is not None:
            mask_file = out_dir / f"{stem}_mask.tif"
            fraction = _write_mask(item, stack, mask, grid, mask_file, src)
            entry["masked_fraction"] = round(fraction, 6)
            if fraction > options.max_masked and not options.force:
                raise DataError(f"{src}: {100 * fraction:.1f} % of the area is masked ({options.mask}), more than "
                                f"--max-masked {options.max_masked:g}; choose a clearer date, or pass --force")
            stack = with_mask(stack, mask_file.resolve())
        vrt = out_dir / f"{stem}.vrt"
        write_text(vrt, stack)
        vrts.append(str(vrt))
        record[stem] = entry
    options.record.update(dates=record, bbox=bbox, mask=options.mask, bands=names)
    return vrts
