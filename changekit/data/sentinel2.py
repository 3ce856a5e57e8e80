"""Sentinel-2 MSI bands as practitioners download them: one file per band (SAFE ``IMG_DATA``, OSCD's
``imgs_1/``, a folder of GeoTIFFs), at 10, 20 or 60 m.

:func:`find_band_files` finds the band files of a folder by name (``..._B02.tif``, ``..._B8A.jp2``,
``..._B02_10m.jp2``); :func:`band_stack_vrt` stacks the chosen bands, in the order asked, onto one 10 m grid
as a GDAL VRT (an XML text rasterio opens like any raster: windowed reads, the coarser bands resampled on
the fly, nothing written). The OSCD dataset reads its cities through the same VRT, so a model sees the same
resampling in training and in ``changekit scene``. :func:`product_level` tells L1C (top-of-atmosphere) from
L2A (surface reflectance) where the names say so.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from changekit.errors import ConfigError, DataError

__all__ = ["S2_BANDS", "BAND_SETS", "RESOLUTION", "resolve_band_names", "find_band_files", "product_level", "level_from_names",
           "band_stack_vrt", "stack_vrt", "with_mask", "read_band_stack", "band_grid"]

#: The 13 MSI bands in the order of the L1C product (and of OSCD's 13-band stacks).
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
#: Native ground sampling distance (m) of each band.
RESOLUTION = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10, "B8A": 20,
              "B09": 60, "B10": 60, "B11": 20, "B12": 20}
#: Named band sets: ``all`` (13), ``rgbn`` (the four 10 m bands: blue, green, red, near infrared), ``rgb``.
BAND_SETS = {"all": S2_BANDS, "rgbn": ("B02", "B03", "B04", "B08"), "rgb": ("B04", "B03", "B02")}

_BAND_FILE = re.compile(r"(?:^|[_\-.])(B0[1-9]|B1[0-2]|B8A)(?:_(10|20|60)m)?\.(tif|tiff|jp2)$", re.IGNORECASE)


def resolve_band_names(bands: str | Sequence[str]) -> tuple[str, ...]:
    """``"all"`` / ``"rgbn"`` / ``"rgb"`` or a list of band names (``B02``, ``b8a`` ...) -> canonical names."""
    if isinstance(bands, str):
        key = bands.strip().lower()
        if key in BAND_SETS:
            return BAND_SETS[key]
        bands = [b for b in re.split(r"[,\s]+", bands) if b]
    out = []
    for b in bands:
        name = str(b).strip().upper()
        if re.fullmatch(r"B\d", name):
            name = "B0" + name[1]
        if name not in RESOLUTION:
            raise ConfigError(f"Sentinel-2 band {b!r} is not one of {', '.join(S2_BANDS)} "
                              f"(or a set: {', '.join(BAND_SETS)})")
        out.append(name)
    return tuple(out)


def find_band_files(folder: str | os.PathLike) -> dict[str, Path]:
    """Band name -> file for the band files under ``folder`` (searched recursively, as in a SAFE product's
    ``GRANULE/*/IMG_DATA[/R10m]``). Where a band exists at several resolutions (L2A's ``B02_10m``/``B02_20m``),
    the finest is kept."""
    folder = Path(folder)
    found: dict[str, tuple[int, Path]] = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            m = _BAND_FILE.search(f)
            if not m:
                continue
            band = m.group(1).upper()
            res = int(m.group(2)) if m.group(2) else RESOLUTION[band]
            if band not in found or res < found[band][0]:
                found[band] = (res, Path(root) / f)
    return {b: p for b, (_, p) in sorted(found.items(), key=lambda kv: S2_BANDS.index(kv[0]))}


def level_from_names(names: Sequence[str]) -> str | None:
    """``"L1C"``, ``"L2A"`` or None from file or folder names: SAFE folders say ``MSIL1C`` / ``MSIL2A``, granule
    files ``MSI_L1C`` / ``_L2A_``, and L2A band files carry their resolution (``_B02_10m.jp2``)."""
    text = " ".join(str(n) for n in names).upper()
    if "MSIL2A" in text or "_L2A_" in text or re.search(r"_B\w\w_(10|20|60)M\.", text):
        return "L2A"
    if "MSIL1C" in text or "MSI_L1C" in text or "_L1C_" in text:
        return "L1C"
    return None


def product_level(folder: str | os.PathLike, files: Sequence[str | os.PathLike] = ()) -> str | None:
    """The product level of a folder of band files: from its own name, its entries (a SAFE folder's
    ``MTD_MSIL2A.xml``), its band files' paths below it and the name of the SAFE product it lies in, if any
    (:func:`level_from_names`); other folders above it are not read (a project folder named ``..._L2A_...`` says
    nothing about the data)."""
    folder = Path(folder)
    names = [folder.resolve().name]
    # a folder inside a SAFE product (GRANULE/.../IMG_DATA): the product's own name says the level
    names += [p.name for p in folder.resolve().parents if p.name.upper().endswith(".SAFE")][:1]
    for f in files:
        f = Path(f)
        names.append(str(f.relative_to(folder)) if f.is_relative_to(folder) else f.name)
    try:
        names += os.listdir(folder)
    except OSError:
        pass
    return level_from_names(names)


def _grid_of(path: str | Path):
    import rasterio

    try:
        with rasterio.open(path) as ds:
            return ds.crs, ds.transform, ds.width, ds.height, ds.dtypes[0]
    except rasterio.errors.RasterioError as e:
        raise DataError(f"{path}: not a raster that GDAL/rasterio can open ({' '.join(str(e).split())[:200]})") from None


def band_stack_vrt(folder: str | os.PathLike, bands: str | Sequence[str], *,
                   grid: tuple | None = None, resampling: str = "bilinear", nodata: float | None = 0) -> str:
    """A GDAL VRT (XML text) stacking ``bands`` of ``folder`` in that order on one grid (see :func:`stack_vrt`).
    Missing bands raise one DataError naming them and the folder."""
    names = resolve_band_names(bands)
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of Sentinel-2 band files")
    files = find_band_files(folder)
    missing = [b for b in names if b not in files]
    if missing:
        have = ", ".join(files) or "none"
        raise DataError(f"{folder}: no file for band(s) {', '.join(missing)} (found: {have}); the model needs "
                        f"{', '.join(names)}. Add those band files (names ending _B02.tif, _B8A.jp2, ...)")
    return stack_vrt({b: str(files[b].resolve()) for b in names}, grid=grid, resampling=resampling, nodata=nodata)


def stack_vrt(sources: Mapping[str, str], *, grid: tuple | None = None, resampling: str = "bilinear",
              nodata: float | None = 0) -> str:
    """A GDAL VRT (XML text) stacking single-band rasters ``sources`` (band name -> any path GDAL opens: a file,
    ``/vsicurl/`` or ``/vsis3/``), in that order, on one grid.

    The grid is ``grid`` (``(crs, transform, width, height)``, e.g. another date's, or a window of it) or that of
    the finest source. Each source is placed by its own geotransform, so 20 m and 60 m bands land where they
    belong and are resampled (``bilinear``) on reading; nothing is read until the VRT is. ``nodata`` (0:
    Sentinel-2's fill value) is what areas without data read as (:func:`with_mask` adds a mask of its own)."""
    grids = {b: _grid_of(src) for b, src in sources.items()}
    if grid is None:
        ref = min(grids, key=lambda b: abs(grids[b][1].a))
        crs, transform, width, height, _ = grids[ref]
    else:
        crs, transform, width, height = grid[:4]
    for b, g in grids.items():
        if g[0] != crs:
            raise DataError(f"{sources[b]}: CRS {g[0]} differs from the grid's {crs}; the bands of a date must share "
                            "one CRS")
    inv = ~transform
    parts = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">']
    if crs is not None:
        parts.append(f"<SRS>{escape(crs.to_wkt())}</SRS>")
    parts.append("<GeoTransform>" + ", ".join(repr(float(v)) for v in transform.to_gdal()) + "</GeoTransform>")
    for k, (b, src) in enumerate(sources.items(), start=1):
        _, t, w, h, dtype = grids[b]
        x0, y0 = inv @ (t.c, t.f)
        x1, y1 = inv @ (t.c + t.a * w, t.f + t.e * h)
        gdal_type = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
                     "float32": "Float32", "float64": "Float64"}.get(dtype, "Float32")
        parts.append(f'<VRTRasterBand dataType="{gdal_type}" band="{k}"><Description>{escape(b)}</Description>')
        if nodata is not None:
            parts.append(f"<NoDataValue>{nodata:g}</NoDataValue>")
        parts.append(
            f'<ComplexSource resampling="{resampling}"><SourceFilename relativeToVRT="0">'
            f"{escape(str(src))}</SourceFilename><SourceBand>1</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
            f'<DstRect xOff="{x0:.10g}" yOff="{y0:.10g}" xSize="{x1 - x0:.10g}" ySize="{y1 - y0:.10g}"/>'
            + (f"<NODATA>{nodata:g}</NODATA>" if nodata is not None else "")
            + "</ComplexSource></VRTRasterBand>")
    parts.append("</VRTDataset>")
    return "".join(parts)


def with_mask(vrt: str, mask: str | os.PathLike) -> str:
    """The stack ``vrt`` (from :func:`stack_vrt`) with ``mask``, a uint8 raster on its grid (0 = masked), as the mask
    of every band: masked pixels read as no data."""
    band = ('<MaskBand><VRTRasterBand dataType="Byte"><SimpleSource><SourceFilename relativeToVRT="0">'
            f"{escape(str(mask))}</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></MaskBand>")
    return vrt.replace("</VRTDataset>", band + "</VRTDataset>")


def read_band_stack(folder: str | os.PathLike, bands: str | Sequence[str], *, grid: tuple | None = None,
                    dtype: str | None = None) -> np.ndarray:
    """The bands of ``folder`` stacked on one grid (see :func:`band_stack_vrt`) as an (H, W, C) array."""
    import rasterio

    vrt = band_stack_vrt(folder, bands, grid=grid)
    try:
        with rasterio.open(vrt) as ds:
            arr = ds.read()
    except rasterio.errors.RasterioError as e:
        raise DataError(f"{folder}: cannot read its band files ({e}); a file is damaged or incomplete") from None
    arr = np.moveaxis(arr, 0, -1)
    return arr.astype(dtype) if dtype else arr


def band_grid(folder: str | os.PathLike, band: str = "B02") -> tuple:
    """``(crs, transform, width, height)`` of one band file of ``folder`` (the 10 m grid of a date)."""
    files = find_band_files(folder)
    b = resolve_band_names([band])[0]
    if b not in files:
        raise DataError(f"{folder}: no file for band {b} (found: {', '.join(files) or 'none'})")
    return _grid_of(files[b])[:4]
