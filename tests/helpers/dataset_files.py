"""Miniature datasets in the official layouts: random images, blocky labels that survive JPEG, and the files of a
split or of BANDON's city/date folders, with the labels each file must decode to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from changekit.data import write_tiff

H = W = 32


def random_image(seed: int, c: int = 3, dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hi = 255 if dtype == np.uint8 else 4000
    return rng.integers(0, hi, (H, W, c)).astype(dtype)


def blocky_label(seed: int) -> np.ndarray:
    """0/1 blocky label (8x8 blocks survive JPEG) with a seed-dependent pattern."""
    rng = np.random.default_rng(100 + seed)
    blocks = (rng.random((H // 8, W // 8)) < 0.4).astype(np.uint8)
    blocks[0, 1] = 1
    blocks[-1, -2] = 0
    return np.roll(np.kron(blocks, np.ones((8, 8), np.uint8)), 3, axis=1)  # edges off the JPEG 8x8 grid


def save_array(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".tif", ".tiff"):
        write_tiff(path, arr)
    else:
        Image.fromarray(arr).save(path)


def make_split(base: Path, dirs, names, sfx=(".png", ".png", ".png"), label_scale=255, label_dtype=np.uint8):
    truth = {}
    for i, n in enumerate(names):
        lab = blocky_label(hash(n) % 1000)
        save_array(base / dirs[0] / f"{n}{sfx[0]}", random_image(2 * i))
        save_array(base / dirs[1] / f"{n}{sfx[1]}", random_image(2 * i + 1))
        save_array(base / dirs[2] / f"{n}{sfx[2]}", (lab * label_scale).astype(label_dtype))
        truth[n] = lab
    return truth


def bandon(root: Path, split: str, label_dir: str, enc255: bool, cities: tuple[str, ...] = ("bj", "sh")):
    truth, sem = {}, {}
    for city in cities:
        for t in ("t1", "t2", "t3"):
            for k in range(1):
                save_array(root / split / "imgs" / city / t / f"{city}_{k}.jpg", random_image(len(city) + int(t[1])))
                b = (blocky_label(int(t[1]) + 7) * np.uint8(1 + int(t[1]) % 2))
                save_array(root / split / "building_labels" / city / t / f"{city}_{k}.png", b)
                sem[(city, t)] = b
        for pair in ("t1VSt2", "t2VSt3"):
            lab = blocky_label(len(pair) + len(city) + int(pair[1])).astype(np.uint8)
            stored = lab * 255 if enc255 else lab.copy()
            exp = lab.astype(np.int64)
            if not enc255:
                stored[:8, 8:16] = 255  # ignore block
                exp[:8, 8:16] = 255
            save_array(root / split / label_dir / city / pair / f"{city}_0.png", stored)
            truth[f"{city}/{pair}/{city}_0"] = exp
    return truth, sem
