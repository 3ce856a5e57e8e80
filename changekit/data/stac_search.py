"""Finding dates in a STAC API (``changekit search``): the Items of a collection over an area of interest in each
period, ranked by how cloudy they are over that area, and the best one per period written as a local Item file
that ``changekit scene`` (or ``timeline``) reads later, offline if the assets are local, by URL otherwise."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from changekit.data.stac import SCL_MASKED, asset_path
from changekit.errors import ConfigError, DataError

__all__ = ["Candidate", "search_periods", "write_choice", "EARTH_SEARCH"]

EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"


@dataclass
class Candidate:
    """One Item found for a period: its cloud cover over the whole product and over the AOI (from its SCL asset,
    None without one), and the share of the AOI it covers."""

    item: Any
    cloud: float | None
    aoi_cloud: float | None
    aoi_covered: float

    @property
    def rank(self) -> tuple:
        cloud = self.aoi_cloud if self.aoi_cloud is not None else self.cloud
        return (-round(self.aoi_covered, 3), math.inf if cloud is None else cloud, str(self.item.id))


def _check_period(period: str) -> str:
    parts = period.split("/")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--dates {period!r}: give each period as START/END, e.g. 2019-06/2019-09 or "
                          "2019-06-01/2019-08-31")
    return period


def _aoi_cloud(item, bbox: Sequence[float]) -> float | None:
    """The masked share (SCL: clouds, shadows, cirrus, snow, no data) of the AOI, by a windowed read of the SCL."""
    import rasterio
    from rasterio.warp import transform_bounds
    from rasterio.windows import from_bounds

    key = next((k for k in item.assets if k.lower() == "scl"), None)
    if key is None:
        return None
    try:
        with rasterio.open(asset_path(item, key)) as ds:
            win = from_bounds(*transform_bounds("EPSG:4326", ds.crs, *bbox, densify_pts=21), transform=ds.transform)
            scl = ds.read(1, window=win.round_offsets().round_lengths(), boundless=True, fill_value=0)
    except (rasterio.errors.RasterioError, ValueError):
        return None  # unreadable from here: rank by the product's cloud cover instead
    return float(np.isin(scl, SCL_MASKED).mean()) if scl.size else None


def search_periods(url: str, collection: str, bbox: Sequence[float], periods: Sequence[str], max_cloud: float,
                   limit: int = 100) -> list[list[Candidate]]:
    """Per period, the Items of ``collection`` that meet ``bbox`` with a cloud cover <= ``max_cloud`` %, best
    first (most of the AOI covered, then least cloud over it)."""
    from pystac_client import Client
    from shapely.geometry import box, shape

    periods = [_check_period(p) for p in periods]
    try:
        client = Client.open(url)
    except Exception as e:  # requests' connection errors, pystac-client's APIError: not reachable from here
        raise DataError(f"cannot reach the STAC API at {url} ({type(e).__name__}); changekit search needs the "
                        "network (offline, give Item files you have to changekit scene)") from None
    aoi = box(*bbox)
    found = []
    for period in periods:
        try:
            items = list(client.search(collections=[collection], bbox=list(bbox), datetime=period,
                                       max_items=limit).items())
        except Exception as e:
            raise DataError(f"{url}: the search for {collection} in {period} failed ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:160]})") from None
        cands = []
        for item in items:
            cloud = item.properties.get("eo:cloud_cover")
            cloud = float(cloud) if isinstance(cloud, int | float) else None
            if cloud is not None and cloud > max_cloud:
                continue
            covered = shape(item.geometry).intersection(aoi).area / aoi.area if item.geometry else 0.0
            aoi_cloud = _aoi_cloud(item, bbox)
            cands.append(Candidate(item, cloud, None if aoi_cloud is None else 100 * aoi_cloud, covered))
        found.append(sorted(cands, key=lambda c: c.rank))
    return found


def write_choice(candidate: Candidate, path: Path) -> Path:
    """The Item as a local JSON file with absolute asset hrefs (so it can be read from anywhere)."""
    from changekit.atomic import write_json

    item = candidate.item.clone()
    item.make_asset_hrefs_absolute()
    item.clear_links()
    return write_json(path, item.to_dict(include_self_link=False))
