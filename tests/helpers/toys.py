"""Test fixtures of the scene pipeline: tiny change models and a fast synthetic GeoTIFF pair.

Importable by module name (``toys``), so that processes spawned by the DDP tests find them too.
``write_scene_pair`` draws bright rectangles ("new buildings") on a smooth texture: unlike the realistic
generator of :mod:`changekit.data.synthetic`, a plain difference detector (:class:`DiffModel`) finds them
almost exactly, which is what the pipeline tests need.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn as nn
from rasterio.transform import from_origin
from rasterio.windows import Window


class ConstantModel(nn.Module):
    """Predicts change probability ``p`` everywhere (a seam test: the blended output must be exactly flat)."""

    num_classes = 2

    def __init__(self, p: float = 0.7, in_channels: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.register_buffer("logit", torch.tensor(math.log(p / (1 - p))))

    def forward(self, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        b, _, h, w = t1.shape
        z = self.logit.expand(b, 1, h, w)
        return torch.cat([torch.zeros_like(z), z], 1)


class ConvModel(nn.Module):
    """Two 3x3 convolutions of the stacked dates: translation-equivariant, output depends on the content."""

    num_classes = 2

    def __init__(self, in_channels: int = 3, seed: int = 0) -> None:
        super().__init__()
        self.in_channels = in_channels
        g = torch.Generator().manual_seed(seed)
        self.c1 = nn.Conv2d(2 * in_channels, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 2, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(torch.cat([t1, t2], 1))))


class SegConvModel(nn.Module):
    """A segmentation toy: two 3x3 convolutions of one image into ``num_classes`` logits (content-dependent)."""

    task = "segmentation"

    def __init__(self, in_channels: int = 3, num_classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        g = torch.Generator().manual_seed(seed)
        self.c1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, num_classes, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(image)))


class DiffModel(nn.Module):
    """``sigmoid(gain * (mean |t2 - t1| over a 3x3 neighbourhood) - bias)``: a fast detector for synthetic scenes."""

    num_classes = 2

    def __init__(self, in_channels: int = 3, gain: float = 8.0, bias: float = 2.0) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.conv = nn.Conv2d(in_channels, 1, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.fill_(gain / (9 * in_channels))
            self.conv.bias.fill_(-bias)

    def forward(self, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        d = self.conv((t2 - t1).abs())
        return torch.cat([torch.zeros_like(d), d], 1)


def ddp_worker(rank: int, world_size: int, port: int, t1: str, t2: str, out: str, kwargs: dict) -> None:
    """Entry point for ``torch.multiprocessing.spawn``: one rank of a CPU (gloo) scene run."""
    import os

    from changekit.geo.scene import run_scene

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    kwargs = dict(kwargs)
    model = kwargs.pop("model_factory")()
    run_scene(t1, t2 or None, out, model=model, progress=False, **kwargs)  # t2 "": one image (segmentation)


DEFAULT_CRS = "EPSG:32631"


def default_transform(pixel: float = 10.0):
    return from_origin(440000.0, 5400000.0, pixel, pixel)


def _rects(size: tuple[int, int], n: int, rng: np.random.Generator, min_side: int, max_side: int) -> np.ndarray:
    H, W = size
    hs = rng.integers(min_side, max_side + 1, n)
    ws = rng.integers(min_side, max_side + 1, n)
    ys = rng.integers(0, np.maximum(1, H - hs))
    xs = rng.integers(0, np.maximum(1, W - ws))
    return np.stack([ys, xs, hs, ws], axis=1)


def write_scene_pair(
    t1_path: str | Path,
    t2_path: str | Path,
    label_path: str | Path | None = None,
    size: tuple[int, int] = (1024, 1024),
    seed: int = 0,
    bands: int = 3,
    dtype: str = "uint8",
    crs: str | None = DEFAULT_CRS,
    transform=None,
    nodata: float | None = None,
    changes_per_mpx: float = 40.0,
    block: int = 512,
    tiled: bool = True,
) -> dict:
    """Write a date-1/date-2 (and label) GeoTIFF trio of ``size`` = (H, W). Returns the rectangles used."""
    H, W = size
    transform = transform or default_transform()
    rng = np.random.default_rng(seed)
    n = max(1, int(round(changes_per_mpx * H * W / 1e6)))
    rects = _rects(size, n, rng, 8, 40)
    freq = rng.uniform(0.002, 0.02, (bands, 3, 2))
    phase = rng.uniform(0, 2 * np.pi, (bands, 3))
    scale = 255.0 if dtype == "uint8" else (4000.0 if dtype == "uint16" else 1.0)
    profile = dict(driver="GTiff", height=H, width=W, count=bands, dtype=dtype, crs=crs, transform=transform,
                   nodata=nodata, compress="deflate")
    if tiled and H >= 16 and W >= 16:
        profile.update(tiled=True, blockxsize=min(512, -(-W // 16) * 16), blockysize=min(512, -(-H // 16) * 16))
    lab_profile = {**profile, "count": 1, "dtype": "uint8", "nodata": None}
    with rasterio.open(t1_path, "w", **profile) as d1, rasterio.open(t2_path, "w", **profile) as d2:
        lab = rasterio.open(label_path, "w", **lab_profile) if label_path else None
        try:
            xs = np.arange(W, dtype=np.float32)
            noise_tile = rng.normal(0, 0.03, (2, bands, 521, 1031)).astype(np.float32)
            for y0 in range(0, H, block):
                h = min(block, H - y0)
                ys = np.arange(y0, y0 + h, dtype=np.float32)
                base = np.full((bands, h, W), 0.45, np.float32)
                for c in range(bands):
                    for k in range(3):  # sin(fy*y + fx*x + p) = sin(fy*y + p) cos(fx*x) + cos(fy*y + p) sin(fx*x)
                        u = freq[c, k, 0] * ys + phase[c, k]
                        v = freq[c, k, 1] * xs
                        base[c] += 0.12 * (np.outer(np.sin(u), np.cos(v)) + np.outer(np.cos(u), np.sin(v)))
                brng = np.random.default_rng([seed, y0])
                a, b = base.copy(), base
                for t, arr in enumerate((a, b)):  # tiled noise at a random offset per block: cheap at any size
                    oy, ox = brng.integers(0, 521), brng.integers(0, 1031)
                    tile = np.roll(noise_tile[t], (-oy, -ox), axis=(1, 2))
                    reps = (1, -(-h // 521), -(-W // 1031))
                    arr += np.tile(tile, reps)[:, :h, :W]
                change = np.zeros((h, W), bool)
                sel = (rects[:, 0] < y0 + h) & (rects[:, 0] + rects[:, 2] > y0)
                for ry, rx, rh, rw in rects[sel]:
                    change[max(ry, y0) - y0:min(ry + rh, y0 + h) - y0, rx:rx + rw] = True
                b[:, change] = 0.9
                out_a = np.clip(a, 0, 1) * scale
                out_b = np.clip(b, 0, 1) * scale
                if np.dtype(dtype).kind in "ui":
                    out_a, out_b = np.rint(out_a), np.rint(out_b)
                win = Window(0, y0, W, h)
                d1.write(out_a.astype(dtype), window=win)
                d2.write(out_b.astype(dtype), window=win)
                if lab is not None:
                    lab.write(change.astype(np.uint8)[None], window=win)
        finally:
            if lab is not None:
                lab.close()
    return {"rects": rects}


# ------------------------------------------------------------------ single-date segmentation scenes
CLASS_IMAGE_SIZE = (300, 430)
CLASS_IMAGE_RECTS = [(20, 30, 60, 80, 0), (150, 200, 90, 70, 2), (40, 300, 50, 100, 1), (220, 20, 60, 60, 0)]  # y, x, h, w, class


class BrightestBand(nn.Module):
    """Segmentation toy: logits = 20 x the normalised bands, so the class is the brightest band."""

    task = "segmentation"
    num_classes = 3
    in_channels = 3

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(20.0))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.gain * image


def write_class_image(path, nodata=None) -> np.ndarray:
    """Background green-ish (class 1), rectangles of pure colours; returns the expected class map."""
    h, w = CLASS_IMAGE_SIZE
    img = np.zeros((3, h, w), np.uint8)
    img[1] = 150
    img[0] = 60
    img[2] = 40
    expected = np.ones((h, w), np.uint8)
    for y, x, rh, rw, c in CLASS_IMAGE_RECTS:
        img[:, y:y + rh, x:x + rw] = 30
        img[c, y:y + rh, x:x + rw] = 220
        expected[y:y + rh, x:x + rw] = c
    profile = dict(driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs=DEFAULT_CRS,
                   transform=default_transform(), tiled=True, blockxsize=256, blockysize=256, nodata=nodata)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(img)
    return expected
