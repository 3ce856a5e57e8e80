"""Opening the scene's images (two dates for change models, one image for segmentation models): band selection,
grid checks (or on-the-fly alignment), nodata and value scaling."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from changekit.errors import ConfigError, DataError

__all__ = ["SceneInputs", "Scaling", "input_flags", "open_inputs", "parse_bands", "resolve_scaling", "train_range",
           "check_units", "band_folder_inputs", "date_statistics"]

SCALE_MODES = ("auto", "none", "dtype", "percentile", "linear")


def parse_bands(text: str | Sequence[int] | None) -> list[int] | None:
    if text is None or text == "":
        return None
    if isinstance(text, str):
        try:
            bands = [int(b) for b in text.replace(" ", "").split(",") if b]
        except ValueError:
            raise ConfigError(f"--bands {text!r}: give 1-based band numbers separated by commas, e.g. 4,3,2") from None
    else:
        bands = [int(b) for b in text]
    if not bands or min(bands) < 1:
        raise ConfigError(f"--bands {text!r}: band numbers are 1-based (the first band is 1)")
    return bands


def _describe_grid(ds) -> str:
    t = ds.transform
    crs = ds.crs.to_string() if ds.crs else "no CRS"
    return (f"{ds.width} x {ds.height} px, {crs}, origin ({t.c:.6f}, {t.f:.6f}), "
            f"pixel ({t.a:.6g}, {t.e:.6g}), rotation ({t.b:.3g}, {t.d:.3g})")


def _same_grid(a, b) -> bool:
    if (a.width, a.height) != (b.width, b.height):
        return False
    if (a.crs is None) != (b.crs is None) or (a.crs is not None and a.crs != b.crs):
        return False
    ta, tb = a.transform, b.transform
    tol = 1e-6 * max(abs(ta.a), abs(ta.e), 1e-12)  # a millionth of a pixel
    return all(math.isclose(x, y, rel_tol=0, abs_tol=tol) for x, y in zip(ta[:6], tb[:6]))


@dataclass
class SceneInputs:
    """The images (two dates, or one image), on the first one's grid. Use as a context manager (closes them)."""

    images: list
    bands: list[int]
    paths: tuple[str, ...]
    aligned: bool
    _stack: contextlib.ExitStack = field(repr=False, default_factory=contextlib.ExitStack)

    def named(self, k: int) -> str:
        """``--t1 PATH`` / ``--image PATH``: image ``k`` (0-based) as the user gave it (for messages)."""
        return f"{input_flags(len(self.paths))[k]} {self.paths[k]}"

    @property
    def height(self) -> int:
        return self.images[0].height

    @property
    def width(self) -> int:
        return self.images[0].width

    @property
    def crs(self):
        return self.images[0].crs

    @property
    def transform(self):
        return self.images[0].transform

    def dtype(self, k: int = 0) -> np.dtype:
        return np.dtype(self.images[k].dtypes[self.bands[0] - 1])

    def read(self, which: int, x: int, y: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        """``(values float32 (C, h, w), valid bool (h, w))`` of one window of image ``which`` (1-based: date 1 or 2)."""
        ds = self.images[which - 1]
        win = Window(x, y, w, h)
        try:
            data = ds.read(self.bands, window=win, out_dtype="float32")
            masks = ds.read_masks(self.bands, window=win)
        except rasterio.errors.RasterioError as e:
            path = self.paths[which - 1]
            raise DataError(f"{path}: cannot read the window at x={x}, y={y} ({w}x{h} px): {e}. The file is damaged or "
                            "incomplete; repair or replace it, then rerun the same command to resume") from None
        valid = masks.min(axis=0) > 0
        if np.issubdtype(np.dtype(ds.dtypes[self.bands[0] - 1]), np.floating):
            valid &= np.isfinite(data).all(axis=0)
        return data, valid

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> SceneInputs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _footprint(ds) -> str:
    b = ds.bounds
    crs = ds.crs.to_string() if ds.crs else "no CRS"
    return f"({b.left:.6g}, {b.bottom:.6g}) .. ({b.right:.6g}, {b.top:.6g}) in {crs}"


def _overlap(ds1, ds2) -> bool:
    """Whether date 2's footprint, taken into date 1's CRS, meets date 1's footprint."""
    from rasterio.warp import transform_bounds

    l2, b2, r2, t2 = transform_bounds(ds2.crs, ds1.crs, *ds2.bounds, densify_pts=21)
    l1, b1, r1, t1 = ds1.bounds
    return min(r1, r2) > max(l1, l2) and min(t1, t2) > max(b1, b2)


def input_flags(n: int) -> tuple[str, ...]:
    """The CLI options that name ``n`` scene images: ``--t1``/``--t2`` (change), ``--image`` (segmentation)."""
    return ("--image",) if n == 1 else ("--t1", "--t2")


def open_inputs(paths: Sequence[str | Path], bands: Sequence[int] | None = None, align: bool = False,
                resampling: str = "bilinear", n_bands: int | None = None, pixel_coords: bool = False) -> SceneInputs:
    """Open the scene's images (two dates, or one image); check (or, with ``align``, warp date 2 onto) date 1's
    grid; check the bands.

    Images without georeferencing are refused unless ``pixel_coords`` (outputs then carry pixel coordinates and
    no CRS); with ``align``, dates whose footprints do not overlap are refused."""
    paths = [str(p) for p in paths]
    flags = input_flags(len(paths))
    named = [f"{f} {p}" for f, p in zip(flags, paths)]
    stack = contextlib.ExitStack()
    try:
        images = [stack.enter_context(_open(p)) for p in paths]
        ds1 = images[0]
        if all(ds.crs is None for ds in images) and not pixel_coords:
            raise DataError(f"{' and '.join(named)} carry no georeferencing (no CRS): the outputs would be in pixel "
                            "coordinates with no CRS. Georeference the inputs, or pass --pixel-coords to accept that")
        aligned = False
        if len(images) == 2 and not _same_grid(ds1, images[1]):
            ds2 = images[1]
            if not align:
                raise DataError(
                    f"the two dates are not on the same grid ({named[0]}: {_describe_grid(ds1)}; "
                    f"{named[1]}: {_describe_grid(ds2)}); pass --align to warp date 2 onto date 1's grid on the fly, "
                    "or co-register them first"
                )
            if ds1.crs is None or ds2.crs is None:
                raise DataError(f"--align needs both dates georeferenced; {paths[0] if ds1.crs is None else paths[1]} has no CRS")
            try:
                rs = Resampling[resampling]
            except KeyError:
                raise ConfigError(f"--resampling {resampling!r}: use one of nearest, bilinear, cubic, lanczos, average") from None
            from rasterio._err import CPLE_BaseError

            try:
                overlap = _overlap(ds1, ds2)
                kw = dict(crs=ds1.crs, transform=ds1.transform, width=ds1.width, height=ds1.height, resampling=rs)
                if ds2.nodata is None:
                    kw["add_alpha"] = True  # areas outside date 2 read as masked
                warped = WarpedVRT(ds2, **kw) if overlap else None
            except (rasterio.errors.RasterioError, CPLE_BaseError) as e:  # PROJ knows no way between the two CRSs
                raise DataError(f"--align: cannot warp {named[1]} ({_describe_grid(ds2)}) onto {named[0]}'s grid "
                                f"({_describe_grid(ds1)}): {' '.join(str(e).split())[:200]}; check both files' "
                                "georeferencing") from None
            if not overlap:
                raise DataError(f"the dates do not overlap: {named[0]} covers {_footprint(ds1)}, {named[1]} covers "
                                f"{_footprint(ds2)}; give two images of the same place")
            images[1] = stack.enter_context(warped)
            aligned = True
        if bands is None:
            want = n_bands or ds1.count
            if ds1.count < want:
                raise DataError(f"{named[0]} has {ds1.count} band(s) but the model takes {want}; "
                                "stack the bands the model was trained on (or pick them with --bands)")
            bands = list(range(1, want + 1))
        bands = list(bands)
        for k, (path, ds) in enumerate(zip(paths, images)):
            count = ds.count - (1 if aligned and k == 1 and ds.nodata is None else 0)
            if max(bands) > count:
                raise DataError(f"{path} has {count} band(s); --bands {','.join(map(str, bands))} asks for band {max(bands)}")
        if n_bands is not None and len(bands) != n_bands:
            raise DataError(f"--bands selects {len(bands)} band(s) but the model takes {n_bands} input channels")
        return SceneInputs(images, bands, tuple(paths), aligned, stack)
    except BaseException:
        stack.close()
        raise


def band_folder_inputs(paths: Sequence[str | Path], info: dict, out_dir: Path) -> list[str]:
    """Dates given as folders of Sentinel-2 band files (a SAFE product, OSCD's ``imgs_1/``): the model's bands
    stacked on date 1's 10 m grid as VRTs written to ``out_dir`` (``t1.vrt``, ``t2.vrt``: small XML files that read
    the band files). Stacked rasters pass through. Either way, data of another product level than the model's
    (L2A surface reflectance for an L1C model) is refused where the names tell, and warned about where they do not."""
    from changekit.atomic import write_text
    from changekit.data.sentinel2 import (
        RESOLUTION,
        band_grid,
        band_stack_vrt,
        find_band_files,
        level_from_names,
        product_level,
    )

    paths = [str(p) for p in paths]
    flags = input_flags(len(paths))
    units = info.get("units") or {}
    names, trained = units.get("band_names"), units.get("product")
    folders = [Path(p).is_dir() for p in paths]
    if any(folders) and not all(folders):
        raise DataError(f"{' and '.join(f'{f} {p}' for f, p in zip(flags, paths))}: give every date as a folder of "
                        "band files, or every date as one stacked raster, not a mix")
    for flag, p, is_dir in zip(flags, paths, folders):
        files = list(find_band_files(p).values()) if is_dir else []
        level = product_level(p, files) if is_dir else level_from_names([Path(p).name])
        if trained and level and level != trained:
            raise DataError(f"{flag} {p} is Sentinel-2 {level} ({_LEVELS.get(level, level)}) but the model was trained "
                            f"on {trained} ({_LEVELS.get(trained, trained)}); give the {trained} product of the same "
                            f"date, or a model trained on {level}")
        if trained and level is None:
            import warnings

            warnings.warn(f"{flag} {p}: its product level is unknown; the model was trained on Sentinel-2 {trained} "
                          f"({_LEVELS.get(trained, trained)}), and data of another level (e.g. L2A) gives wrong changes",
                          stacklevel=2)
    if not any(folders):
        return paths
    if not names:
        raise ConfigError(f"{flags[0]} {paths[0]} is a folder of band files, but the model does not record which "
                          "Sentinel-2 bands it takes (changekit's s2- models do); stack the bands into one raster")
    grid = band_grid(paths[0], min(names, key=RESOLUTION.__getitem__))  # date 1's grid of the finest band
    texts = [band_stack_vrt(p, names, grid=grid) for p in paths]  # every date checked before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    vrts = [out_dir / f"{flag.lstrip('-')}.vrt" for flag in flags]
    for vrt, text in zip(vrts, texts):
        write_text(vrt, text)
    return [str(v) for v in vrts]


_LEVELS = {"L1C": "top-of-atmosphere digital numbers", "L2A": "surface reflectance"}


def _open(path: str | Path):
    p = str(path)
    if "://" not in p and not p.startswith("/vsi") and not Path(p).exists():
        raise DataError(f"{p}: no such file")
    try:
        return rasterio.open(p)
    except rasterio.errors.RasterioIOError as e:
        raise DataError(f"{p}: not a raster that GDAL/rasterio can open ({e})") from e


# ------------------------------------------------------------------------------------------ scaling
@dataclass(frozen=True)
class Scaling:
    """Per-band ``x_train = clip(x * gain + offset)`` (clip only where ``clip`` is set), then normalised."""

    mode: str
    gain: tuple[float, ...]
    offset: tuple[float, ...]
    clip: tuple[float, float] | None

    def describe(self) -> str:
        parts = ", ".join(f"x*{g:.6g}{o:+.6g}" for g, o in zip(self.gain, self.offset))
        return f"{self.mode}: {parts}" + (f", clipped to {self.clip[0]:g}..{self.clip[1]:g}" if self.clip else "")


def train_range(mean: Sequence[float] | None, std: Sequence[float] | None = None,
                recorded: Sequence[float] | None = None) -> tuple[float, float]:
    """The value range of the model's training units: ``recorded`` if given, else 0..1 when every mean and
    every std is <= 1 (ImageNet-style ``0.485``/``0.229``), else 0..255 (8-bit images, changekit's default)."""
    if recorded is not None:
        return float(recorded[0]), float(recorded[1])
    small = lambda v: v is not None and len(v) and max(abs(float(x)) for x in v) <= 1.0
    if small(mean) and (std is None or small(std)):
        return 0.0, 1.0
    return 0.0, 255.0


def _sample(ds, bands: list[int], max_side: int = 1024) -> np.ndarray:
    """A decimated read (<= max_side px on the long side) of the valid values: (C, N) float64."""
    f = max(1, math.ceil(max(ds.height, ds.width) / max_side))
    shape = (len(bands), max(1, ds.height // f), max(1, ds.width // f))
    try:
        data = ds.read(bands, out_shape=shape, out_dtype="float64", resampling=Resampling.nearest)
        valid = ds.read_masks(bands, out_shape=shape, resampling=Resampling.nearest).min(axis=0) > 0
    except rasterio.errors.RasterioError as e:
        raise DataError(f"{ds.name}: cannot read it ({e}). The file is damaged or incomplete; repair or replace it, "
                        "then rerun the same command to resume") from None
    valid &= np.isfinite(data).all(axis=0)
    return data[:, valid]


def date_statistics(inputs: SceneInputs, scaling: Scaling, mode: str = "per-date") -> list[dict[str, list[float]]]:
    """Per image, the mean and std of each band (``per-date``) or of all bands together (``per-image``, repeated
    per band) over its valid pixels (a decimated read, <= 1024 px on the long side), in training units: for models
    trained on each date standardised on its own (the ``standardize`` of the OSCD preset)."""
    stats = []
    for ds in inputs.images:
        v = _sample(ds, inputs.bands)
        if v.shape[1] == 0:
            raise DataError(f"{ds.name}: no valid pixels to standardise the date with")
        g, o = np.array(scaling.gain)[:, None], np.array(scaling.offset)[:, None]
        v = v * g + o
        if scaling.clip is not None:
            v = np.clip(v, *scaling.clip)
        if mode == "per-date":
            mean, std = v.mean(1), v.std(1)
        else:
            mean, std = np.full(len(v), v.mean()), np.full(len(v), v.std())
        stats.append({"mean": mean.tolist(), "std": np.maximum(std, 1e-6).tolist()})
    return stats


def check_units(spec: str, inputs: SceneInputs, target: tuple[float, float], trained_dtype: str | None) -> None:
    """Refuse inputs whose units cannot be what the model learnt, unless ``--scale`` says how to map them.

    With ``--scale auto``: the two dates must share a data type; inputs that ``auto`` passes through unscaled
    (uint8, float) must have the training data's type (when the checkpoint records it) and values inside the
    training range (a 0..1 float image for a model trained on 0..255, or values far above the range, are refused).
    An explicit ``--scale`` is the user's statement of the mapping and is not second-guessed.
    """
    if spec.strip().lower() != "auto":
        return
    d1 = inputs.dtype(0)
    fix = "pass --scale (percentile, dtype or linear:MIN,MAX) to map the stored values onto the training range"
    if len(inputs.images) == 2 and inputs.dtype(1) != d1:
        raise DataError(f"the dates differ in data type: {inputs.named(0)} is {d1}, {inputs.named(1)} is "
                        f"{inputs.dtype(1)}, so no automatic scaling fits both; convert one to the other's units, or {fix}")
    if not _passes_through(d1, trained_dtype):
        return  # auto stretches other integer types by percentiles onto the training range
    lo, hi = target
    if trained_dtype is not None and np.dtype(trained_dtype) != d1:
        raise DataError(f"{inputs.named(0)} is {d1} but the model was trained on {trained_dtype} images "
                        f"(values {lo:g}..{hi:g}); {fix}")
    sample = np.concatenate([_sample(ds, inputs.bands, 512) for ds in inputs.images], axis=1)
    if sample.size == 0:
        return  # no valid pixel: reported after the run
    vmax = float(sample.max())
    if vmax > hi + 0.5 * (hi - lo) or (hi - lo > 2 and vmax <= 1.0 and np.issubdtype(d1, np.floating)):
        raise DataError(f"{inputs.paths[0]}: values reach {vmax:g} but the model's training range is {lo:g}..{hi:g}; "
                        f"{fix} (or --input-range if the training range is another one)")


def _passes_through(dtype: np.dtype, trained_dtype: str | None) -> bool:
    """Whether ``--scale auto`` reads values as stored: uint8 and float images, and any type the model was trained
    on (a Sentinel-2 model trained on uint16 digital numbers takes uint16 digital numbers)."""
    if trained_dtype is not None and np.dtype(trained_dtype) == dtype:
        return True
    return dtype == np.uint8 or np.issubdtype(dtype, np.floating)


def resolve_scaling(spec: str, inputs: SceneInputs, target: tuple[float, float],
                    trained_dtype: str | None = None) -> Scaling:
    """Turn ``--scale`` into per-band gain/offset mapping stored values to training units.

    * ``none``: values as stored (the model was trained on data in the same units).
    * ``dtype``: the integer dtype's full range onto the training range (uint16 -> 0..255 is ``/257``).
    * ``percentile[:LO,HI]`` (default 2,98): per band, the LO..HI percentiles of *both dates together*
      (a decimated read) onto the training range, clipped. One mapping for both dates keeps real
      brightness changes visible to the model.
    * ``linear:MIN,MAX``: MIN..MAX onto the training range, clipped (e.g. ``linear:0,3000`` for
      Sentinel-2 L1C reflectance x 10000).
    * ``auto`` (default): ``none`` for uint8 and float inputs and for inputs of the type the model was trained on
      (``trained_dtype``), ``percentile`` for other integer types.
    """
    name, _, arg = spec.partition(":")
    name = name.strip().lower()
    n = len(inputs.bands)
    lo_t, hi_t = target
    dtype = inputs.dtype(0)
    if name not in SCALE_MODES:
        raise ConfigError(f"--scale {spec!r}: use one of none, dtype, percentile[:LO,HI], linear:MIN,MAX, auto")
    if name == "auto":
        name = "none" if _passes_through(dtype, trained_dtype) else "percentile"
        arg = ""
    if name == "none":
        return Scaling("none", (1.0,) * n, (0.0,) * n, None)
    if name == "dtype":
        if not np.issubdtype(dtype, np.integer):
            raise ConfigError(f"--scale dtype needs integer inputs; {inputs.paths[0]} is {dtype}. Use none, percentile or linear:MIN,MAX")
        info = np.iinfo(dtype)
        g = (hi_t - lo_t) / (float(info.max) - float(info.min))
        return Scaling(f"dtype ({dtype})", (g,) * n, (lo_t - info.min * g,) * n, None)
    if name == "linear":
        try:
            a, b = (float(v) for v in arg.split(","))
        except ValueError:
            raise ConfigError(f"--scale {spec!r}: write linear:MIN,MAX, e.g. linear:0,3000") from None
        if b <= a:
            raise ConfigError(f"--scale {spec!r}: MAX must be larger than MIN")
        g = (hi_t - lo_t) / (b - a)
        return Scaling(f"linear {a:g}..{b:g}", (g,) * n, (lo_t - a * g,) * n, (lo_t, hi_t))
    # percentile
    try:
        plo, phi = (float(v) for v in arg.split(",")) if arg else (2.0, 98.0)
    except ValueError:
        raise ConfigError(f"--scale {spec!r}: write percentile:LO,HI, e.g. percentile:2,98") from None
    samples = np.concatenate([_sample(ds, inputs.bands) for ds in inputs.images], axis=1)
    if samples.shape[1] == 0:
        raise DataError(f"{' and '.join(inputs.paths)}: no valid pixels to compute percentiles from")
    gains, offsets = [], []
    for c in range(n):
        a, b = np.percentile(samples[c], [plo, phi])
        if b <= a:
            b = a + 1.0
        g = (hi_t - lo_t) / (b - a)
        gains.append(float(g))
        offsets.append(float(lo_t - a * g))
    return Scaling(f"percentile {plo:g}..{phi:g}", tuple(gains), tuple(offsets), (lo_t, hi_t))
