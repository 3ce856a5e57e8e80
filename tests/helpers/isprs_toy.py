"""Synthetic tiles in the official ISPRS file formats (names, RGB images, colour-coded labels, eroded variant):
the input of tests/data/test_isprs.py and of benchmarks/reference/isprs_converter_check.py, which runs mmseg's
converters on the same tiles. Deterministic (seeded), so both see the same pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

from changekit.data.isprs import CLASS_COLOURS

#: tile sizes (H, W) that are not multiples of 512, so the converters pull crops back at the edges
POTSDAM_TILES = {"2_10": (600, 1030), "5_15": (530, 700)}
VAIHINGEN_TILES = {"area1": (700, 540), "area2": (512, 900)}


def tile_arrays(seed: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image CHW uint8, full label RGB CHW, class map HW) of blocks of random classes, with a few pixels of a
    colour that is no class (as real label files have), and the image correlated with the classes."""
    rng = np.random.default_rng(seed)
    h, w = size
    blocks = rng.integers(0, 6, (h // 40 + 1, w // 40 + 1))
    cls = np.kron(blocks, np.ones((40, 40), np.int64))[:h, :w]
    label = np.array(CLASS_COLOURS, np.uint8)[cls].transpose(2, 0, 1).copy()
    odd = rng.random((h, w)) < 0.001
    label[:, odd] = np.array([250, 3, 7], np.uint8)[:, None]
    image = (rng.integers(0, 40, (3, h, w)) + 30 * cls[None]).astype(np.uint8)
    return image, label, cls


def eroded(label: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """The label with class boundaries painted black (the ``noBoundary`` variant)."""
    edge = np.zeros(cls.shape, bool)
    edge[:, 1:] |= cls[:, 1:] != cls[:, :-1]
    edge[1:, :] |= cls[1:, :] != cls[:-1, :]
    out = label.copy()
    out[:, edge] = 0
    return out


def write_tif(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    c, h, w = arr.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c, dtype="uint8") as ds:
        ds.write(arr)


def write_official_tiles(root: Path, site: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The site's tiles under ``root`` as the downloads extract: Potsdam ``2_Ortho_RGB/``, ``5_Labels_all/``,
    ``5_Labels_all_noBoundary/``; Vaihingen ``top/``, ``gts_for_participants/``, ``eroded/``. Returns the arrays."""
    out = {}
    tiles = POTSDAM_TILES if site == "potsdam" else VAIHINGEN_TILES
    for k, (tile, size) in enumerate(tiles.items()):
        image, label, cls = tile_arrays(100 * (site == "vaihingen") + k, size)
        if site == "potsdam":
            write_tif(root / "2_Ortho_RGB" / f"top_potsdam_{tile}_RGB.tif", image)
            write_tif(root / "5_Labels_all" / f"top_potsdam_{tile}_label.tif", label)
            write_tif(root / "5_Labels_all_noBoundary" / f"top_potsdam_{tile}_label_noBoundary.tif", eroded(label, cls))
        else:
            write_tif(root / "top" / f"top_mosaic_09cm_{tile}.tif", image)
            write_tif(root / "gts_for_participants" / f"top_mosaic_09cm_{tile}.tif", label)
            write_tif(root / "eroded" / f"top_mosaic_09cm_{tile}_noBoundary.tif", eroded(label, cls))
        out[tile] = (image, cls, eroded(label, cls))
    return out
