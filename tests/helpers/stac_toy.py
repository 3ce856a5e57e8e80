"""Local STAC Items over small per-band GeoTIFFs (:mod:`s2_toy`'s pattern), written with pystac in the two
naming conventions catalogues use: Earth Search's L1C (asset keys by common name: ``blue``, ``red``, ``nir``;
band names in ``eo:bands``) and Planetary Computer's L2A (asset keys ``B02`` ... and ``SCL``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from changekit.data.sentinel2 import RESOLUTION, S2_BANDS, find_band_files
from changekit.data.stac import COMMON_NAMES
from helpers.s2_toy import H, W, write_band_folder

CLOUD = (60, 6, 24, 30)  # x, y, w, h on the 10 m grid (multiples of 2) covered by SCL class 9 in date 2


def _to_cog(path: Path) -> Path:
    from rasterio.shutil import copy

    tmp = path.with_name("cog_" + path.name)
    copy(path, tmp, driver="COG", blocksize=64, overview_resampling="nearest")
    tmp.replace(path)
    return path


def write_scl(path: Path, date: int, origin=(500000.0, 5400000.0), epsg: int = 32631) -> Path:
    """A 20 m scene classification: vegetation (4) everywhere, a high-probability cloud (9) in date 2."""
    scl = np.full((H // 2, W // 2), 4, np.uint8)
    if date == 2:
        x, y, w, h = (v // 2 for v in CLOUD)
        scl[y:y + h, x:x + w] = 9
    with rasterio.open(path, "w", driver="GTiff", width=W // 2, height=H // 2, count=1, dtype="uint8",
                       crs=f"EPSG:{epsg}", transform=from_origin(*origin, 20.0, 20.0)) as ds:
        ds.write(scl, 1)
    return path


def write_item(folder: Path, date: int, *, level: str = "L1C", bands=S2_BANDS, drop=(), epsg: int = 32631,
               origin=(500000.0, 5400000.0), no_crs: bool = False, geometry=None) -> Path:
    """Band files of one date in ``folder`` and its STAC Item ``folder/item.json`` (absolute local hrefs)."""
    import pystac

    write_band_folder(folder, date, bands=bands, drop=drop, epsg=epsg, origin=origin)
    files = find_band_files(folder)
    for f in files.values():  # as catalogues serve them: cloud-optimised GeoTIFFs
        _to_cog(f)
    if no_crs:
        for f in files.values():  # the same pixels and transform, no CRS
            with rasterio.open(f) as ds:
                data, profile = ds.read(), {**ds.profile, "crs": None}
            with rasterio.open(f, "w", **profile) as ds:
                ds.write(data)
    lon, lat = 3.0, 48.75  # about where 500000, 5400000 in UTM 31N is
    geometry = geometry or {"type": "Polygon", "coordinates": [[[lon, lat - 0.01], [lon + 0.02, lat - 0.01],
                                                                [lon + 0.02, lat], [lon, lat], [lon, lat - 0.01]]]}
    from shapely.geometry import shape

    item = pystac.Item(id=f"S2_{level}_date{date}", geometry=geometry, bbox=list(shape(geometry).bounds),
                       datetime=dt.datetime(2018 + date, 7, 1, tzinfo=dt.UTC),
                       properties={"s2:product_type": "S2MSI1C" if level == "L1C" else "S2MSI2A",
                                   "eo:cloud_cover": 10.0 * date},
                       collection=None)
    for band, f in files.items():
        key = band if level == "L2A" else {"B05": "rededge1", "B06": "rededge2", "B07": "rededge3"}.get(
            band, COMMON_NAMES[band])
        item.add_asset(key, pystac.Asset(str(f.resolve()), media_type=pystac.MediaType.COG, roles=["data"],
                                         extra_fields={"eo:bands": [{"name": band, "common_name": COMMON_NAMES[band]}],
                                                       "gsd": RESOLUTION[band]}))
    if level == "L2A":
        scl = _to_cog(write_scl(folder / "SCL_20m.tif", date, origin, epsg))
        item.add_asset("SCL", pystac.Asset(str(scl.resolve()), media_type=pystac.MediaType.COG, roles=["data"]))
    path = folder / "item.json"
    item.set_self_href(str(path.resolve()))
    item.save_object(include_self_link=False, dest_href=str(path))
    return path
