"""Raster reading and writing for change-detection data.

* PNG / JPG / BMP go through pillow; TIFF (any number of bands, any dtype) through rasterio.
* :func:`read_image` returns ``float32`` (H, W, C) in the **stored units** (uint8 PNG -> 0..255,
  uint16 GeoTIFF -> 0..65535): the data contract keeps mean/std in the same units.
* :func:`read_label` returns the raw (H, W) integer map; encodings are decoded by the dataset.
* :func:`image_shape` reads only the header (fast validation).
* Every failure is a :class:`~changekit.errors.DataError` naming the file and what to do.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from changekit.atomic import atomic_write
from changekit.errors import DataError

PIL_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_EXTS = (".tif", ".tiff")
IMAGE_EXTS = PIL_EXTS + TIFF_EXTS

__all__ = [
    "IMAGE_EXTS",
    "image_shape",
    "read_image",
    "read_window",
    "select_bands",
    "read_label",
    "write_png",
    "write_tiff",
]


@contextlib.contextmanager
def _quiet():
    """Plain (non-georeferenced) TIFFs are normal here: silence rasterio's NotGeoreferencedWarning."""
    with warnings.catch_warnings():
        try:
            from rasterio.errors import NotGeoreferencedWarning

            warnings.simplefilter("ignore", NotGeoreferencedWarning)
        except ImportError:  # pragma: no cover
            pass
        yield


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_EXTS


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: file not found. Check the dataset root, folder names and file suffixes.")


def image_shape(path: str | os.PathLike) -> tuple[int, int, int]:
    """(H, W, bands) from the file header only (no pixel decoding)."""
    path = Path(path)
    _check_exists(path)
    try:
        if _is_tiff(path):
            import rasterio

            with _quiet(), rasterio.open(path) as ds:
                return int(ds.height), int(ds.width), int(ds.count)
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
            return h, w, len(im.getbands())
    except DataError:
        raise
    except Exception as e:  # pillow / rasterio raise many types for corrupt files
        raise DataError(f"{path}: cannot read image header ({type(e).__name__}: {e}). "
                        "The file is corrupt or not an image; re-download or re-export it.") from e


def _read_raw(path: Path, palette_indices: bool = True) -> np.ndarray:
    """(H, W, C) array in stored dtype (palette PNGs: the indices, or RGB with ``palette_indices=False``)."""
    _check_exists(path)
    try:
        if _is_tiff(path):
            import rasterio

            with _quiet(), rasterio.open(path) as ds:
                arr = ds.read()  # (C, H, W)
            return np.moveaxis(arr, 0, -1)
        from PIL import Image

        with Image.open(path) as im:
            if im.mode == "P":
                # palette label maps keep their indices; palette *images* are expanded to RGB
                arr = np.asarray(im) if palette_indices else np.asarray(im.convert("RGB"))
            elif im.mode in ("I;16", "I;16B", "I;16L", "I", "F", "L", "1", "RGB", "RGBA", "LA"):
                arr = np.asarray(im)
            else:
                arr = np.asarray(im.convert("RGB"))
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return arr
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e}). "
                        "The file is corrupt, truncated or not an image; re-download or re-export it.") from e


def read_window(path: str | os.PathLike, x: int, y: int, w: int, h: int) -> np.ndarray:
    """Pixels ``[y, y + h) x [x, x + w)`` of a raster (GeoTIFF/anything GDAL reads) as (h, w, C) in stored dtype:
    crops of large tiles without reading the whole file."""
    path = Path(path)
    _check_exists(path)
    try:
        import rasterio
        from rasterio.windows import Window

        with _quiet(), rasterio.open(path) as ds:
            if x < 0 or y < 0 or x + w > ds.width or y + h > ds.height:
                raise DataError(f"{path}: the window x={x}, y={y}, {w}x{h} px lies outside its {ds.width}x{ds.height} "
                                "px; the file is smaller than its pair (re-download it)")
            arr = ds.read(window=Window(x, y, w, h))
        return np.moveaxis(arr, 0, -1)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: cannot read the window x={x}, y={y}, {w}x{h} px ({type(e).__name__}: {e}). "
                        "The file is corrupt or truncated; re-download it.") from e


def read_image(path: str | os.PathLike, bands: Sequence[int] | None = None) -> np.ndarray:
    """Read an image as float32 (H, W, C) in stored units.

    ``bands``: 0-based channel indices to keep (e.g. ``[3, 2, 1]`` for a Sentinel-2 RGB from a 13-band
    stack). An index past the file's band count is a :class:`DataError`.
    """
    path = Path(path)
    return select_bands(_read_raw(path, palette_indices=False), bands, path)


def select_bands(arr: np.ndarray, bands: Sequence[int] | None, path: str | os.PathLike) -> np.ndarray:
    """The 0-based ``bands`` of an (H, W, C) array read from ``path`` (all when None), as float32; an index past
    its band count is a :class:`DataError`."""
    if bands is not None:
        bands = list(bands)
        bad = [b for b in bands if not -arr.shape[2] <= b < arr.shape[2]]
        if bad:
            raise DataError(f"{path}: has {arr.shape[2]} band(s) but bands={bands} asks for index {bad[0]} "
                            "(0-based). Fix `bands` in the data config.")
        arr = arr[:, :, bands]
    return np.ascontiguousarray(arr, dtype=np.float32)


def read_label(path: str | os.PathLike, colour: str = "error") -> np.ndarray:
    """Read a label map as a raw integer (H, W) array.

    Grey masks stored as RGB(A) (R=G=B) are read as one band. Colour masks (channels differ, e.g. red =
    new / green = demolished) raise a DataError, or with ``colour="max"`` are read as the per-pixel
    maximum over the colour channels (any colour = change; used for binary encodings).
    """
    path = Path(path)
    arr = _read_raw(path)
    if arr.shape[2] > 1:
        if arr.shape[2] in (3, 4) and np.array_equal(arr[:, :, 0], arr[:, :, 1]) and np.array_equal(
            arr[:, :, 0], arr[:, :, 2]
        ):
            arr = arr[:, :, :1]
        elif arr.shape[2] in (3, 4) and colour == "max":
            arr = arr[:, :, :3].max(axis=2, keepdims=True)
        elif arr.shape[2] in (3, 4) and _is_jpeg(path):
            # JPEG-compressed grey masks (CDD/SVCD) saved as RGB: channels differ by compression noise
            arr = arr[:, :, :3].mean(axis=2, keepdims=True).round()
        else:
            raise DataError(f"{path}: label has {arr.shape[2]} bands with different values; a label must be a "
                            "single-band (grey) map of class values. Convert it to single-band PNG/TIFF.")
    arr = arr[:, :, 0]
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise DataError(f"{path}: label holds non-integer values; labels must be integer class maps.")
    return arr.astype(np.int64)


def _is_jpeg(path: Path) -> bool:
    return path.suffix.lower() in (".jpg", ".jpeg")


def write_png(path: str | os.PathLike, arr: np.ndarray, palette: Sequence[Sequence[int]] | None = None) -> Path:
    """Write uint8/uint16 (H, W) or (H, W, 3|4) to PNG/JPG atomically (temp name, then rename). ``palette``: RGB
    colours of the values of a uint8 (H, W) class map, stored as a palette PNG (values kept, shown in colour)."""
    from PIL import Image

    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    with atomic_write(path) as tmp:
        fmt = "JPEG" if _is_jpeg(Path(path)) else "PNG"
        im = Image.fromarray(np.ascontiguousarray(arr))
        if palette is not None:
            im = im.convert("P") if im.mode != "L" else Image.frombytes("P", im.size, im.tobytes())
            im.putpalette([int(v) for c in palette for v in c[:3]])
        im.save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return Path(path)


def write_tiff(
    path: str | os.PathLike,
    arr: np.ndarray,
    *,
    crs=None,
    transform=None,
    nodata=None,
) -> None:
    """Write (H, W) or (H, W, C) to a (Geo)TIFF atomically, with optional CRS / affine transform."""
    import rasterio

    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    profile = dict(driver="GTiff", height=arr.shape[0], width=arr.shape[1], count=arr.shape[2],
                   dtype=arr.dtype.name)
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    if nodata is not None:
        profile["nodata"] = nodata
    with atomic_write(path) as tmp:
        with _quiet(), rasterio.open(tmp, "w", **profile) as ds:
            ds.write(np.moveaxis(arr, -1, 0))
