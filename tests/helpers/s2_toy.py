"""Small Sentinel-2 band folders and OSCD / SZTAKI layouts written by the tests (the real datasets are never
needed): one GeoTIFF per band at its native resolution (10 m bands W x H, 20 m at W/2 x H/2, 60 m at W/6 x H/6),
uint16 digital numbers, a square that brightens in date 2 (the change)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from changekit.data.sentinel2 import RESOLUTION, S2_BANDS

W, H = 96, 72  # on the 10 m grid (multiples of 6)
SQUARE = (24, 18, 30, 24)  # x, y, w, h of the change on the 10 m grid (multiples of 6)


def band_value(band: str, date: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    base = 800 + 97 * S2_BANDS.index(band) + 3 * x + 2 * y
    if date == 2:
        x0, y0, w, h = SQUARE
        inside = (x >= x0) & (x < x0 + w) & (y >= y0) & (y < y0 + h)
        base = base + 1500 * inside
    return base.astype(np.uint16)


def write_band_folder(folder: Path, date: int, *, bands=S2_BANDS, name="T31UDQ_2017{}T105441_{}.tif",
                      size=(W, H), epsg=32631, origin=(500000.0, 5400000.0), drop=()) -> Path:
    """One date as per-band GeoTIFFs named like L1C granule files (``..._B02.tif``)."""
    folder.mkdir(parents=True, exist_ok=True)
    w10, h10 = size
    for band in bands:
        if band in drop:
            continue
        f = RESOLUTION[band] // 10
        w, h = w10 // f, h10 // f
        # the value at a coarse pixel is the fine pattern at its centre, so resampling can be checked
        x = (np.arange(w) * f + (f - 1) / 2)[None, :].repeat(h, 0)
        y = (np.arange(h) * f + (f - 1) / 2)[:, None].repeat(w, 1)
        data = band_value(band, date, np.floor(x).astype(int), np.floor(y).astype(int))
        tr = from_origin(origin[0], origin[1], 10.0 * f, 10.0 * f)
        with rasterio.open(folder / name.format(f"{date:02d}01", band), "w", driver="GTiff", width=w, height=h,
                           count=1, dtype="uint16", crs=f"EPSG:{epsg}", transform=tr) as ds:
            ds.write(data, 1)
    return folder


def write_oscd(root: Path, cities=("alpha", "beta", "gamma", "paris"), test=("delta",), official=True) -> Path:
    """An OSCD download in the official layout (or one folder per city): images, lists, 1/2 labels."""
    images = root / "Onera Satellite Change Detection dataset - Images" if official else root
    for city in (*cities, *test):
        write_band_folder(images / city / "imgs_1", 1)
        write_band_folder(images / city / "imgs_2", 2)
        (images / city / "dates.txt").write_text("date_1: 20160101\ndate_2: 20170101\n")
        if city in test:
            continue
        lab = np.ones((H, W), np.uint8)
        x0, y0, w, h = SQUARE
        lab[y0:y0 + h, x0:x0 + w] = 2
        cm = (root / "Onera Satellite Change Detection dataset - Train Labels" if official else root) / city / "cm"
        cm.mkdir(parents=True, exist_ok=True)
        with rasterio.open(cm / f"{city}-cm.tif", "w", driver="GTiff", width=W, height=H, count=1,
                           dtype="uint8") as ds:
            ds.write(lab, 1)
        Image.fromarray(((lab == 2) * 255).astype(np.uint8)).save(cm / "cm.png")
    if official:
        (images / "train.txt").write_text(",".join(cities))
        (images / "test.txt").write_text(",".join(test))
    return root


def write_sztaki(root: Path) -> Path:
    """SZTAKI AirChange as distributed: Szada/1..3 and Tiszadob/1..3 (mixed-case .bmp), 952x640 pairs."""
    rng = np.random.default_rng(0)
    for site, n in (("Szada", 3), ("Tiszadob", 3)):
        for i in range(1, n + 1):
            d = root / site / str(i)
            d.mkdir(parents=True, exist_ok=True)
            a = rng.integers(0, 255, (640, 952, 3), dtype=np.uint8)
            b = a.copy()
            b[100:140, 800:860] = 255 - b[100:140, 800:860]  # a change outside the test rectangle
            b[10:30, 10:40] = 255 - b[10:30, 10:40]  # and one inside it
            gt = np.zeros((640, 952), np.uint8)
            gt[100:140, 800:860] = 255
            gt[10:30, 10:40] = 255
            Image.fromarray(a).save(d / "im1.bmp")
            Image.fromarray(b).save(d / ("im2.BMP" if i == 2 else "im2.bmp"))
            Image.fromarray(np.stack([gt] * 3, -1)).save(d / ("gt.BMP" if i == 3 else "gt.bmp"))
    return root
