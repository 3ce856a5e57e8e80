"""Synthetic bi-temporal scenes, deterministic by seed.

A scene is defined on global pixel coordinates, so any window of it can be rendered on its own: that is
how :func:`write_geotiff_pair` writes scenes thousands of pixels across tile by tile with little memory,
and how date 2 gets its misregistration (rendered at a window shifted by up to 1 px).

Content: textured ground (soil/grass value noise), roads along a cell grid, tree patches, buildings
(10-40 px, several roof colours with a ridge) with cast shadows. Changes: buildings that appear (only in
date 2) or vanish (only in date 1); the label is their footprint (1 = changed). Nuisances on unchanged
ground: per-date illumination gain/offset and colour cast, seasonal shift of vegetation colour, a sun
direction per date (shadows of unchanged buildings move), misregistration of date 2 (<= 1 px), sensor noise.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from changekit.atomic import atomic_write
from changekit.data.io import write_png

__all__ = ["make_pair", "make_landcover", "write_dataset", "write_segmentation_dataset", "write_landcover_geotiff", "LANDCOVER_CLASSES", "LANDCOVER_PALETTE", "write_geotiff_pair", "render_window", "render_pair_window", "render_label", "SceneParams", "scene_params", "Building", "ROOF",
           "date_series_buildings", "render_series_date", "write_date_series"]

CELL = 64  # building/road grid (px)
_ROOFS = np.array([[172, 172, 178], [168, 84, 62], [82, 112, 165], [214, 212, 204], [96, 96, 104],
                   [190, 150, 110]], np.float32)
_SOIL = np.array([152, 132, 102], np.float32)
_GRASS = np.array([96, 122, 72], np.float32)
_DRY = np.array([150, 140, 90], np.float32)  # late-season grass
_TREE = np.array([48, 80, 44], np.float32)
_TREE_AUTUMN = np.array([110, 92, 50], np.float32)
_ROAD = np.array([118, 118, 116], np.float32)


# ---------------------------------------------------------------------------------------------- hashing
def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def _hash01(seed: int, salt: int, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        k = (np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(salt * 0x632BE59BD9B4E019 & (2**64 - 1)))
        h = _mix(np.asarray(iy, np.int64).astype(np.uint64) * np.uint64(0xD1B54A32D192ED03)
                 ^ _mix(np.asarray(ix, np.int64).astype(np.uint64) + k))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _value_noise(seed: int, salt: int, y0: int, x0: int, h: int, w: int, scale: float) -> np.ndarray:
    """Smooth value noise in [0, 1) on the window, continuous across windows (separable interpolation)."""
    ys = (y0 + np.arange(h)) / scale
    xs = (x0 + np.arange(w)) / scale
    iy, ix = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    fy, fx = (ys - iy).astype(np.float32), (xs - ix).astype(np.float32)
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
    ly = np.arange(iy.min(), iy.max() + 2)
    lx = np.arange(ix.min(), ix.max() + 2)
    lat = _hash01(seed, salt, ly[:, None], lx[None, :]).astype(np.float32)
    ry, rx = iy - ly[0], ix - lx[0]
    rows = lat[:, rx] * (1 - fx) + lat[:, rx + 1] * fx  # (ny, w)
    return rows[ry] * (1 - fy)[:, None] + rows[ry + 1] * fy[:, None]


# ---------------------------------------------------------------------------------------------- scene
@dataclass(frozen=True)
class DateParams:
    gain: float
    offset: float
    cast: tuple[float, float, float]
    season: float  # 0 = green, 1 = dry/autumn
    sun: tuple[int, int]  # shadow offset (dy, dx) in px
    noise: float
    shift: tuple[int, int]  # misregistration (dy, dx) of this date's window


@dataclass(frozen=True)
class SceneParams:
    seed: int
    dates: tuple[DateParams, DateParams]
    p_building: float = 0.75
    p_new: float = 0.2
    p_gone: float = 0.12


def scene_params(seed: int, nuisance: float = 1.0) -> SceneParams:
    """Per-scene (per-pair) nuisance parameters drawn from ``seed``. ``nuisance`` scales their strength
    (0 = identical radiometry, no seasonal shift, same sun, no misregistration, no noise; 1 = default)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 7])
    k = float(nuisance)
    dates = []
    sun_ang = rng.uniform(0, 2 * np.pi)
    for d in range(2):
        sun_len = int(rng.integers(3, 7))
        ang = sun_ang + k * rng.uniform(-np.pi / 2, np.pi / 2) * d  # date 2: sun direction moved (shadows move)
        shift = (0, 0) if d == 0 else (int(rng.integers(-1, 2)), int(rng.integers(-1, 2)))
        dates.append(DateParams(
            gain=float(1 + k * rng.uniform(-0.2, 0.2)),
            offset=float(k * rng.uniform(-12, 12)),
            cast=tuple(float(1 + k * c) for c in rng.uniform(-0.07, 0.07, 3)),
            season=float(k * (rng.uniform(0.0, 0.35) if d == 0 else rng.uniform(0.0, 0.7))),
            sun=(int(round(sun_len * np.sin(ang))), int(round(sun_len * np.cos(ang)))),
            noise=float(k * rng.uniform(2.0, 6.0)),
            shift=shift if k >= 0.5 else (0, 0),
        ))
    return SceneParams(int(seed), (dates[0], dates[1]))


def _cell_buildings(sp: SceneParams, cy: int, cx: int) -> list[tuple[int, int, int, int, int, int]]:
    """Buildings of one grid cell: (y, x, h, w, roof index, state) with state 0 both dates, 1 new, 2 gone.
    Buildings keep 7 px from the cell edges (roads run there); two buildings in a cell never overlap."""
    rng = np.random.default_rng([sp.seed & 0xFFFFFFFF, 11, cy & 0xFFFFFFFF, cx & 0xFFFFFFFF])
    out = []
    if rng.random() > sp.p_building:
        return out
    lo, span = 7, CELL - 14  # interior [7, 57)
    n = 1 if rng.random() < 0.65 else 2
    axis = int(rng.integers(2))
    for i in range(n):
        size = [int(rng.integers(10, 41)), int(rng.integers(10, 41))]
        start, length = [lo, lo], [span, span]
        if n == 2:  # split the interior in two halves along `axis`, one building per half
            half = span // 2
            size[axis] = min(size[axis], half - 2)
            start[axis], length[axis] = lo + i * half + (1 if i else 0), half - 1
        y = cy * CELL + start[0] + int(rng.integers(0, max(1, length[0] - size[0] + 1)))
        x = cx * CELL + start[1] + int(rng.integers(0, max(1, length[1] - size[1] + 1)))
        u = rng.random()
        state = 1 if u < sp.p_new else (2 if u < sp.p_new + sp.p_gone else 0)
        out.append((y, x, size[0], size[1], int(rng.integers(len(_ROOFS))), state))
    return out


def _buildings_in(sp: SceneParams, y0: int, x0: int, h: int, w: int, margin: int = 8):
    cys = range((y0 - margin) // CELL, (y0 + h + margin) // CELL + 1)
    cxs = range((x0 - margin) // CELL, (x0 + w + margin) // CELL + 1)
    return [b for cy in cys for cx in cxs for b in _cell_buildings(sp, cy, cx)]


def _road_mask(sp: SceneParams, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """Roads centred on some cell-grid lines (buildings keep 7 px from cell edges)."""
    ys, xs = y0 + np.arange(h), x0 + np.arange(w)

    def lines(coord: np.ndarray, salt: int) -> np.ndarray:
        k = np.round(coord / CELL).astype(np.int64)
        on = _hash01(sp.seed, salt, k, np.zeros_like(k)) < 0.35
        half = 2 + (_hash01(sp.seed, salt + 1, k, np.zeros_like(k)) * 3).astype(np.int64)  # 2..4 px
        return on & (np.abs(coord - k * CELL) <= half)

    return lines(ys, 101)[:, None] | lines(xs, 103)[None, :]


def _fill(mask_or_img: np.ndarray, y: int, x: int, h: int, w: int, y0: int, x0: int, value) -> None:
    H, W = mask_or_img.shape[:2]
    a, b = max(y - y0, 0), min(y + h - y0, H)
    c, d = max(x - x0, 0), min(x + w - x0, W)
    if a < b and c < d:
        mask_or_img[a:b, c:d] = value


def _static_layers(sp: SceneParams, y0: int, x0: int, h: int, w: int) -> dict[str, np.ndarray]:
    """Date-independent layers of the window (noise fields, trees, roads)."""
    s = sp.seed
    return {
        "n1": _value_noise(s, 1, y0, x0, h, w, 48.0),
        "n3": _value_noise(s, 3, y0, x0, h, w, 5.0) - 0.5,
        "tree": _value_noise(s, 2, y0, x0, h, w, 20.0) > 0.7,
        "n4": _value_noise(s, 4, y0, x0, h, w, 2.5) - 0.5,
        "road": _road_mask(sp, y0, x0, h, w),
    }


def _compose(sp: SceneParams, date: int, L: dict[str, np.ndarray], y0: int, x0: int, h: int, w: int,
             ly0: int, lx0: int, noise_seed: int, buildings: list | None = None) -> np.ndarray:
    """Date ``date`` on window (y0, x0, h, w), taking static layers ``L`` computed from (ly0, lx0)."""
    dp = sp.dates[date]
    sl = (slice(y0 - ly0, y0 - ly0 + h), slice(x0 - lx0, x0 - lx0 + w))
    n1, n3, tree, n4, road = (L[k][sl] for k in ("n1", "n3", "tree", "n4", "road"))
    grass = _GRASS * (1 - dp.season) + _DRY * dp.season
    m = np.clip((n1 - 0.35) * 3.0, 0, 1)[..., None]
    img = m * (grass - _SOIL)
    img += n3[..., None] * 28.0
    img += _SOIL
    tcol = _TREE * (1 - dp.season * 0.6) + _TREE_AUTUMN * dp.season * 0.6
    img[tree] = tcol + n4[tree][:, None] * 40.0
    img[road] = _ROAD + n3[road][:, None] * 10.0
    # buildings of this date: shadows first, then roofs
    present = (0, 2) if date == 0 else (0, 1)  # state 1 = new (date 2 only), 2 = gone (date 1 only)
    if buildings is None:
        buildings = _buildings_in(sp, y0, x0, h, w)
    blds = [b for b in buildings if b[5] in present]
    shade = np.ones((h, w), np.float32)
    sdy, sdx = dp.sun
    for (by, bx, bh, bw, _, _) in blds:
        _fill(shade, by + sdy, bx + sdx, bh, bw, y0, x0, 0.55)
    img *= shade[..., None]
    for (by, bx, bh, bw, ri, _) in blds:
        roof = _ROOFS[ri]
        _fill(img, by, bx, bh, bw, y0, x0, roof)
        if bh >= bw:  # ridge along the longer side: one half a little darker
            _fill(img, by, bx, bh, bw // 2, y0, x0, roof * 0.88)
        else:
            _fill(img, by, bx, bh // 2, bw, y0, x0, roof * 0.88)
    # per-date radiometry + sensor noise
    img *= np.asarray(dp.cast, np.float32) * dp.gain
    rng = np.random.default_rng([sp.seed & 0xFFFFFFFF, 17, date, noise_seed & 0xFFFFFFFF])
    img += rng.standard_normal((h, w, 1), dtype=np.float32) * dp.noise + dp.offset
    return img


def render_window(sp: SceneParams, date: int, y0: int, x0: int, h: int, w: int,
                  noise_seed: int | None = None) -> np.ndarray:
    """Render date ``date`` (0/1) of the scene on the window; float32 (h, w, 3) in 0..255 (unclipped)."""
    return render_pair_window(sp, y0, x0, h, w, noise_seed)[date]


def render_pair_window(sp: SceneParams, y0: int, x0: int, h: int, w: int, noise_seed: int | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Both dates on the window (static layers computed once, on the window grown by 1 px so that
    date 2's misregistration shift stays inside)."""
    L = _static_layers(sp, y0 - 1, x0 - 1, h + 2, w + 2)
    blds = _buildings_in(sp, y0 - 1, x0 - 1, h + 2, w + 2)
    out = []
    for d in (0, 1):
        dy, dx = sp.dates[d].shift
        out.append(_compose(sp, d, L, y0 + dy, x0 + dx, h, w, y0 - 1, x0 - 1, noise_seed or 0, blds))
    return out[0], out[1]


def render_label(sp: SceneParams, y0: int, x0: int, h: int, w: int, buildings: list | None = None) -> np.ndarray:
    """Change label (uint8 0/1) of the window on date 1's grid."""
    lab = np.zeros((h, w), np.uint8)
    for (by, bx, bh, bw, _, state) in (buildings if buildings is not None else _buildings_in(sp, y0, x0, h, w)):
        if state:
            _fill(lab, by, bx, bh, bw, y0, x0, 1)
    return lab


def _to_u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_pair(size: int | Sequence[int] = (256, 256), seed: int = 0, nuisance: float = 1.0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic pair: ``(t1 uint8 HxWx3, t2 uint8 HxWx3, label uint8 HxW in {0,1})``.
    ``nuisance`` scales the unchanged-ground differences (see :func:`scene_params`)."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    sp = scene_params(seed, nuisance)
    t1, t2 = render_pair_window(sp, 0, 0, h, w)
    return _to_u8(t1), _to_u8(t2), render_label(sp, 0, 0, h, w)


def _sample_seed(seed: int, split_index: int, i: int) -> int:
    return int(_mix(np.array([(seed & 0xFFFFFFFF) * 1_000_003 + split_index * 10_000_019 + i], np.uint64))[0] >> np.uint64(33))


def write_dataset(root: str | os.PathLike, n_train: int = 200, n_val: int = 40, n_test: int = 40,
                  size: int | Sequence[int] = (256, 256), seed: int = 0, progress=None,
                  nuisance: float = 1.0) -> Path:
    """Write ``root/{train,val,test}/{A,B,label}/<name>.png`` (labels 0/255); returns ``root``.
    Names are ``<split>_<index:05d>``. Files are written atomically."""
    root = Path(root)
    for si, (split, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        if n <= 0:
            continue
        for d in ("A", "B", "label"):
            (root / split / d).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            t1, t2, lab = make_pair(size, _sample_seed(seed, si, i), nuisance)
            name = f"{split}_{i:05d}.png"
            write_png(root / split / "A" / name, t1)
            write_png(root / split / "B" / name, t2)
            write_png(root / split / "label" / name, lab * 255)
            if progress is not None:
                progress(split, i)
    return root


def write_geotiff_pair(
    t1_path: str | os.PathLike,
    t2_path: str | os.PathLike,
    label_path: str | os.PathLike | None = None,
    size: int | Sequence[int] = (2048, 2048),
    seed: int = 0,
    crs: str = "EPSG:32631",
    transform=((500000.0, 5000000.0), 0.5),
    nodata: float | None = None,
    tile: int = 512,
    bands: int = 3,
    nuisance: float = 1.0,
) -> None:
    """Write a synthetic scene pair as GeoTIFFs with CRS and geotransform (uint8, ``bands`` bands:
    RGB, then NIR-like extra bands), and optionally its change label (uint8 0/1, same grid).

    ``transform``: ``((x_origin, y_origin), pixel_size)`` of the top-left corner (pixel_size a number or
    (x, y)), or a ``rasterio.Affine``. Generated and written ``tile`` rows/cols at a time (memory ~ a few
    tiles), so scenes of several thousand pixels take seconds. With ``nodata`` set, the images never hold
    that value (it is nudged by one) and the profile carries it. Files appear atomically.
    """
    import rasterio
    from rasterio.transform import Affine
    from rasterio.windows import Window

    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if isinstance(transform, Affine):
        aff = transform
    else:
        (ox, oy), px = transform
        pxx, pxy = (px, px) if np.isscalar(px) else px
        aff = Affine(float(pxx), 0.0, float(ox), 0.0, -float(pxy), float(oy))  # north-up, top-left origin
    sp = scene_params(seed, nuisance)
    prof = dict(driver="GTiff", height=h, width=w, dtype="uint8", crs=crs, transform=aff, tiled=True,
                blockxsize=256, blockysize=256, compress="deflate")
    img_prof = dict(prof, count=bands, **({"nodata": nodata} if nodata is not None else {}))
    if h < 256 or w < 256:
        img_prof.pop("tiled"), img_prof.pop("blockxsize"), img_prof.pop("blockysize")
        prof.pop("tiled"), prof.pop("blockxsize"), prof.pop("blockysize")
    paths = [Path(t1_path), Path(t2_path)] + ([Path(label_path)] if label_path is not None else [])
    with contextlib.ExitStack() as stack:  # every file appears complete, or none does
        tmps = [stack.enter_context(atomic_write(p)) for p in paths]
        dss = [rasterio.open(tmps[0], "w", **img_prof), rasterio.open(tmps[1], "w", **img_prof)]
        if label_path is not None:
            dss.append(rasterio.open(tmps[2], "w", **dict(prof, count=1)))
        try:
            for ty in range(0, h, tile):
                for tx in range(0, w, tile):
                    th, tw = min(tile, h - ty), min(tile, w - tx)
                    win = Window(tx, ty, tw, th)
                    nseed = ty * 100_003 + tx
                    pair = render_pair_window(sp, ty, tx, th, tw, noise_seed=nseed)
                    for d in (0, 1):
                        u8 = _to_u8(pair[d])
                        if bands > 3:
                            veg = np.clip(u8[..., 1].astype(np.float32) * 1.6 - u8[..., 0] * 0.4 + 30, 0, 255)
                            extra = [np.clip(veg * (1 - 0.08 * k), 0, 255).astype(np.uint8) for k in range(bands - 3)]
                            u8 = np.concatenate([u8] + [e[..., None] for e in extra], axis=2)
                        else:
                            u8 = u8[..., :bands]
                        if nodata is not None and 0 <= nodata <= 255:
                            u8[u8 == int(nodata)] = int(nodata) + (1 if nodata < 255 else -1)
                        dss[d].write(np.moveaxis(u8, -1, 0), window=win)
                    if label_path is not None:
                        dss[2].write(render_label(sp, ty, tx, th, tw)[None], window=win)
        finally:
            for ds in dss:
                ds.close()


#: classes of the synthetic single-date land-cover set (stored +1: 0 is mmseg's "ignore" under reduce-zero)
LANDCOVER_CLASSES = ("ground", "tree", "road", "building")
#: and their colours in maps and figures
LANDCOVER_PALETTE = ((196, 170, 120), (34, 139, 34), (90, 90, 90), (220, 60, 40))


def make_landcover(size: int | Sequence[int] = (256, 256), seed: int = 0, nuisance: float = 1.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic single-date tile: ``(image uint8 HxWx3, classes uint8 HxW)`` with classes
    :data:`LANDCOVER_CLASSES` as 0..3 (the scene's first date: ground, trees, roads, building roofs)."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    sp = scene_params(seed, nuisance)
    layers = _static_layers(sp, 0, 0, h, w)
    blds = [b for b in _buildings_in(sp, 0, 0, h, w) if b[5] in (0, 2)]  # standing on the first date
    img = _compose(sp, 0, layers, 0, 0, h, w, 0, 0, 0, blds)
    cls = np.zeros((h, w), np.uint8)
    cls[layers["tree"]] = 1
    cls[layers["road"]] = 2
    for (by, bx, bh, bw, _, _) in blds:
        _fill(cls, by, bx, bh, bw, 0, 0, 3)
    return _to_u8(img), cls


def write_segmentation_dataset(root: str | os.PathLike, n_train: int = 200, n_val: int = 40,
                               size: int | Sequence[int] = (256, 256), seed: int = 0, progress=None) -> Path:
    """Write a synthetic single-date land-cover set in mmseg's layout, ``root/{img_dir,ann_dir}/{train,val}/
    <name>.png``, labels stored as mmseg's converters store them (class + 1, 0 = ignored; ``reduce-zero``);
    returns ``root``."""
    root = Path(root)
    for si, (split, n) in enumerate((("train", n_train), ("val", n_val))):
        for d in ("img_dir", "ann_dir"):
            (root / d / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, cls = make_landcover(size, _sample_seed(seed, si + 7, i))
            name = f"{split}_{i:05d}.png"
            write_png(root / "img_dir" / split / name, img)
            write_png(root / "ann_dir" / split / name, cls + 1)
            if progress is not None:
                progress(split, i)
    return root


def write_landcover_geotiff(image_path: str | os.PathLike, label_path: str | os.PathLike | None = None,
                            size: int | Sequence[int] = (1024, 1536), seed: int = 0, crs: str = "EPSG:32631",
                            origin: tuple[float, float] = (500000.0, 5000000.0), pixel: float = 0.5) -> None:
    """A synthetic single-date land-cover scene as a georeferenced GeoTIFF (uint8 RGB, tiled) and its class raster
    (uint8 0..3, :data:`LANDCOVER_CLASSES`, the palette as colour table): the large-scene input of the
    segmentation demo. Generated whole (a few MB per megapixel); files appear atomically."""
    import rasterio
    from rasterio.transform import from_origin

    img, cls = make_landcover(size, seed)
    h, w = cls.shape
    profile = dict(driver="GTiff", width=w, height=h, dtype="uint8", crs=crs, tiled=True, blockxsize=256,
                   blockysize=256, compress="deflate", transform=from_origin(origin[0], origin[1], pixel, pixel))
    with atomic_write(image_path) as tmp, rasterio.open(tmp, "w", count=3, **profile) as ds:
        ds.write(img.transpose(2, 0, 1))
    if label_path is not None:
        with atomic_write(label_path) as tmp, rasterio.open(tmp, "w", count=1, **profile) as ds:
            ds.write(cls, 1)
            ds.write_colormap(1, {i: (*c, 255) for i, c in enumerate(LANDCOVER_PALETTE)})


# ------------------------------------------------------------------------------------------- N-date series
#: roof colour of the date series' buildings: no background, road or season reaches it (R > 200 and G < 100)
ROOF = (250, 60, 60)


@dataclass(frozen=True)
class Building:
    """A rectangle (y, x, h, w) built at ``events[0]``, demolished at ``events[1]``, rebuilt at ``events[2]`` ...
    (1-based date indices, in order)."""

    y: int
    x: int
    h: int
    w: int
    events: tuple[int, ...]

    def present(self, date: int) -> bool:
        """Standing at ``date`` (1-based): an odd number of its events happened by then."""
        return sum(e <= date for e in self.events) % 2 == 1


def date_series_buildings(n_dates: int, size: Sequence[int], seed: int = 0, n: int = 12) -> list[Building]:
    """Buildings that appear, are demolished and reappear at known dates (every schedule is possible, including
    one standing from the first date, which is no change)."""
    rng = np.random.default_rng(seed)
    H, W = size
    out: list[Building] = []
    tries = 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        h, w = (int(v) for v in rng.integers(8, max(9, min(H, W) // 4), 2))
        y, x = int(rng.integers(0, max(1, H - h))), int(rng.integers(0, max(1, W - w)))
        if any(y < b.y + b.h + 2 and b.y < y + h + 2 and x < b.x + b.w + 2 and b.x < x + w + 2 for b in out):
            continue  # apart, so that each is its own region
        k = int(rng.integers(1, 4))
        events = tuple(sorted(int(e) for e in rng.choice(np.arange(1, n_dates + 1), size=min(k, n_dates),
                                                         replace=False)))
        out.append(Building(y, x, h, w, events))
    return out


def render_series_date(buildings: Sequence[Building], date: int, n_dates: int, size: Sequence[int],
                       seed: int = 0) -> np.ndarray:
    """Date ``date`` (1-based) of the series as uint8 (H, W, 3): a ground texture that shifts colour with the
    seasons (not change), the buildings standing then in :data:`ROOF` red."""
    H, W = size
    base = _value_noise(seed, 11, 0, 0, H, W, 24.0)
    phase = 2 * np.pi * (date - 1) / max(1, min(n_dates, 4))  # a yearly cycle, sampled 4 times a year at most
    season = np.array([1 + 0.12 * np.cos(phase), 1 + 0.15 * np.sin(phase), 1 - 0.1 * np.cos(phase)], np.float32)
    img = (70 + 80 * base)[..., None] * np.array([1.0, 1.1, 0.8], np.float32) * season
    img = np.clip(img, 0, 160)
    for b in buildings:
        if b.present(date):
            img[b.y:b.y + b.h, b.x:b.x + b.w] = ROOF
    return img.astype(np.uint8)


def write_date_series(folder: str | os.PathLike, n_dates: int, size: Sequence[int] = (256, 256), seed: int = 0,
                      n_buildings: int = 12, crs: str = "EPSG:32631", pixel: float = 10.0) -> tuple[list[Path], list[Building]]:
    """``date01.tif`` ... ``dateNN.tif`` (uint8 RGB GeoTIFFs on one grid) of a place where buildings appear, are
    demolished and reappear at known dates, with seasonal colour shifts that are not change. Returns the paths and
    the buildings (their ``events`` are the truth a timeline must find)."""
    import rasterio
    from rasterio.transform import from_origin

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    H, W = int(size[0]), int(size[1])
    buildings = date_series_buildings(n_dates, (H, W), seed, n_buildings)
    paths = []
    for d in range(1, n_dates + 1):
        path = folder / f"date{d:02d}.tif"
        img = render_series_date(buildings, d, n_dates, (H, W), seed)
        with atomic_write(path) as tmp, rasterio.open(
                tmp, "w", driver="GTiff", width=W, height=H, count=3, dtype="uint8", crs=crs,
                transform=from_origin(440000.0, 5400000.0, pixel, pixel), compress="deflate") as ds:
            ds.write(np.moveaxis(img, -1, 0))
        paths.append(path)
    return paths, buildings
