"""How `changekit/demo_data/oscd/` was made from the OSCD download (kept for provenance; the demo only reads it).

Two cities, each as OSCD lays them out (``<city>/imgs_1``, ``imgs_2``, ``cm``): **paris**, one of changekit's
held-out cities (whole, with its change map: the demo's F1 is honest), and a window of **lasvegas** (an official
test city, no public labels: the picture of urban growth). Band files are copied losslessly (DEFLATE with a
horizontal predictor; same values, same georeferencing); a window is cut on the 60 m grid so that every band
keeps whole pixels.

    .venv/bin/python benchmarks/make_demo_data.py data/OSCD changekit/demo_data/oscd
"""

from __future__ import annotations

import argparse
from pathlib import Path

import rasterio
from rasterio.windows import Window

from changekit.data.oscd import IMAGES, LABELS
from changekit.data.sentinel2 import RESOLUTION, find_band_files

#: city -> window on the 10 m grid (col, row, width, height; multiples of 6), or None for the whole city
CITIES = {"paris": None, "lasvegas": (216, 168, 480, 480)}


def copy_band(src: Path, dst: Path, window: tuple[int, int, int, int] | None, factor: int) -> None:
    with rasterio.open(src) as ds:
        win = Window(0, 0, ds.width, ds.height) if window is None else Window(*(v // factor for v in window))
        data = ds.read(window=win)
        profile = ds.profile | {"width": int(win.width), "height": int(win.height), "compress": "deflate",
                                "predictor": 2, "transform": ds.window_transform(win)}
        profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("oscd", help="the extracted OSCD folder (holding 'Onera Satellite Change Detection dataset - Images')")
    p.add_argument("out")
    args = p.parse_args()
    root, out = Path(args.oscd), Path(args.out)
    for city, window in CITIES.items():
        for date in ("imgs_1", "imgs_2"):
            for band, path in find_band_files(root / IMAGES / city / date).items():
                copy_band(path, out / city / date / path.name, window, RESOLUTION[band] // 10)
        for labels in LABELS:
            cm = root / labels / city / "cm" / f"{city}-cm.tif"
            if cm.is_file():
                copy_band(cm, out / city / "cm" / cm.name, window, 1)
        (out / city / "dates.txt").write_text((root / IMAGES / city / "dates.txt").read_text())


if __name__ == "__main__":
    main()
