"""OSCD (Onera Satellite Change Detection; Caye Daudt et al., IGARSS 2018) read as it is distributed.

Layouts (either is found by itself):

* the official download: ``<root>/Onera Satellite Change Detection dataset - Images/<city>/imgs_{1,2}/*_B01.tif ...``
  with ``train.txt`` / ``test.txt`` there, labels in ``<root>/Onera Satellite Change Detection dataset - Train
  Labels/<city>/cm/<city>-cm.tif`` (and ``... - Test Labels`` if you have them);
* one folder per city: ``<root>/<city>/{imgs_1,imgs_2,cm}`` (what changekit vendors for its demo).

Each date is the chosen Sentinel-2 bands stacked onto date 1's 10 m grid (B02) through
:func:`changekit.data.sentinel2.band_stack_vrt` (20/60 m bands resampled bilinearly, date 2 placed by its own
geotransform: some cities' second dates are a few pixels smaller). Values stay L1C digital numbers
(uint16, reflectance x 10000). Labels: ``<city>-cm.tif`` stores 1 = no change, 2 = change (the dataset README
says 0/1, the files say 1/2; both are read), else ``cm.png`` (0/255). Pixels without data in either date
are ignored.

Splits: ``train`` and ``test`` are the official lists; ``heldout`` is changekit's held-out test
(paris, bordeaux, pisa); any comma-separated list of cities (``"nantes,rennes"``) is a split too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from changekit.data.datasets import PairDataset, Sample, decode_label
from changekit.data.io import read_label
from changekit.data.sentinel2 import band_grid, read_band_stack, resolve_band_names
from changekit.errors import DataError

__all__ = ["OscdDataset", "HELDOUT_CITIES", "STANDARDIZE", "standardize_date"]

IMAGES = "Onera Satellite Change Detection dataset - Images"
LABELS = ("Onera Satellite Change Detection dataset - Train Labels",
          "Onera Satellite Change Detection dataset - Test Labels")
#: changekit's held-out test cities: never trained, selected or tuned on.
HELDOUT_CITIES = ("paris", "bordeaux", "pisa")


#: How a date can be standardised on its own: ``per-date``, each band to zero mean and unit std; ``per-image``, one
#: mean and std over all bands of the date (Caye Daudt et al.'s OSCD normalisation), which keeps the band ratios.
STANDARDIZE = ("per-date", "per-image")


def standardize_date(a: np.ndarray, valid: np.ndarray | None = None, mode: str = "per-date") -> np.ndarray:
    """(H, W, C) standardised over the valid pixels (default: not all bands 0): each band (``per-date``) or all
    bands together (``per-image``) at zero mean and unit std."""
    valid = (a != 0).any(-1) if valid is None else valid
    v = a[valid] if valid.any() else a.reshape(-1, a.shape[-1])
    axis = 0 if mode == "per-date" else None
    mean, std = v.mean(axis), v.std(axis)
    return ((a - mean) / np.maximum(std, 1e-6)).astype(np.float32)


class OscdDataset(PairDataset):
    """OSCD cities as samples (one pair each, whole images; the training crops come from the transforms). A date is
    a folder of band files, so checks read every city (``HEADERS_TELL``).

    Args (besides :class:`~changekit.data.datasets.BaseDataset`'s label and normalisation ones):
        band_names: ``"all"`` (the 13 bands, B01..B12 with B8A after B08), ``"rgbn"`` (B02 B03 B04 B08) or a list.
        label_source: ``"tif"`` (``<city>-cm.tif``, default) or ``"png"`` (``cm.png``).
        standardize: ``"per-date"``: each date's bands to zero mean and unit std over its valid pixels (the whole
            city), which takes out the global level differences between acquisitions (season, sun, atmosphere);
            ``"per-image"``: one mean and std over all bands of the date (Caye Daudt et al., ICIP 2018), which
            takes out the level but keeps the band ratios. ``changekit scene`` does the same over the whole scene
            for a model trained so.
    """

    HEADERS_TELL = False

    def __init__(self, root, split: str | None = "train", *, band_names: Any = "all", label_source: str = "tif",
                 standardize: str | None = None, **kw):
        self.band_names = resolve_band_names(band_names)
        if standardize not in (None, *STANDARDIZE):
            raise DataError(f"standardize={standardize!r}: use per-date (each date's bands to zero mean, unit std "
                            "over the whole city), per-image (one mean and std over all its bands) or leave it out")
        self.standardize = standardize
        if label_source not in ("tif", "png"):
            raise DataError(f"label_source={label_source!r}: use tif (<city>-cm.tif) or png (cm.png)")
        self.label_source = label_source
        kw.setdefault("in_channels", len(self.band_names))
        kw.setdefault("label_encoding", "index")
        kw.setdefault("ignore_value", None)
        self._cache: dict[int, dict[str, Any]] = {}
        self._ranges: dict[int, tuple[float, float]] = {}  # stored min/max of both dates, for units()
        super().__init__(root, split, **kw)

    # ------------------------------------------------------------------ construction
    def _images_dir(self) -> Path:
        official = self.root / IMAGES
        return official if official.is_dir() else self.root

    def _cities(self) -> list[str]:
        split = str(self.split)
        if split == "heldout":
            return list(HELDOUT_CITIES)
        lst = self._images_dir() / f"{split}.txt"
        if lst.is_file():
            return [c.strip() for c in lst.read_text().replace("\n", ",").split(",") if c.strip()]
        if split in ("train", "test"):
            self.problems.append(f"split list {lst} is missing; the official download has train.txt and test.txt "
                                 "there (or give the cities: split 'city1,city2')")
            return []
        return [c.strip() for c in split.split(",") if c.strip()]

    def _label_file(self, city: str) -> Path | None:
        name = f"{city}-cm.tif" if self.label_source == "tif" else "cm.png"
        for base in [self.root / d for d in LABELS] + [self.root]:
            p = base / city / "cm" / name
            if p.is_file():
                return p
        return None

    def _expected_layout(self) -> str:
        return (f"{self.root}/{IMAGES}/<city>/imgs_{{1,2}}/*_B??.tif (+ '... - Train Labels/<city>/cm/<city>-cm.tif') "
                f"or {self.root}/<city>/{{imgs_1,imgs_2,cm}}")

    def _scan(self) -> tuple[list[Sample], bool]:
        P = self.problems
        if not self.root.is_dir():
            P.append(f"root folder {self.root} does not exist. Set data.root to the OSCD folder.")
            return [], False
        cities = self._cities()
        images = self._images_dir()
        samples, unlabelled = [], []
        for city in cities:
            d1, d2 = images / city / "imgs_1", images / city / "imgs_2"
            if not d1.is_dir() or not d2.is_dir():
                P.append(f"city {city!r}: {d1} or {d2} is missing. Expected layout {self._expected_layout()}")
                continue
            label = self._label_file(city) if self.labels_mode is not False else None
            if label is None:
                unlabelled.append(city)
            samples.append(Sample(city, (d1, d2), label))
        if self.labels_mode is True and unlabelled:
            P.append(f"no label for {', '.join(unlabelled)} (looked for <city>/cm/"
                     f"{'<city>-cm.tif' if self.label_source == 'tif' else 'cm.png'} under the label folders). The "
                     "OSCD test labels are not public: evaluate on labelled cities, or set labels: false to predict")
        if not samples and not P:
            P.append(f"no cities in split {self.split!r} ({self._expected_layout()}).")
        return samples, self.labels_mode is not False and bool(samples) and not unlabelled

    # ------------------------------------------------------------------ loading
    def _read_image(self, path: Path, grid: tuple | None = None) -> np.ndarray:
        """One date: the chosen bands on ``grid`` (default: the date's own B02 grid), float32 HWC, DN units."""
        arr = read_band_stack(path, self.band_names, grid=grid if grid is not None else band_grid(path))
        return self._check_channels(arr.astype(np.float32), path)

    def load_label(self, path: Path) -> np.ndarray:
        raw = read_label(path, colour="max").astype(np.int64)
        values = set(np.unique(raw).tolist())
        if path.suffix.lower() == ".png" or values <= {0, 255}:
            return decode_label(raw, "0-255", ignore_value=None, path=path)
        if values <= {1, 2}:  # as the files store them: 1 = no change, 2 = change
            raw = raw - 1
        return decode_label(raw, "0-1", ignore_value=None, ignore_index=self.ignore_index, path=path)

    def load_arrays(self, i: int) -> dict[str, Any]:
        if i in self._cache:  # read-only arrays: the transforms make new ones, never write in place
            return dict(self._cache[i])
        s = self.samples[i]
        grid = band_grid(s.images[0])
        t1, t2 = (self._read_image(d, grid) for d in s.images)
        self._ranges[i] = (float(min(t1.min(), t2.min())), float(max(t1.max(), t2.max())))
        out: dict[str, Any] = {"t1": t1, "t2": t2, "name": s.name}
        if self.standardize:
            out["t1"], out["t2"] = (standardize_date(t, mode=self.standardize) for t in (t1, t2))
        if self._has_labels and s.label is not None:
            lab = self._read_label_for(s, t1.shape[:2])
            nodata = (t1 == 0).all(-1) | (t2 == 0).all(-1)
            lab[nodata] = self.ignore_index
            out["label"] = lab
        for v in out.values():
            if isinstance(v, np.ndarray):
                v.setflags(write=False)
        self._cache[i] = out  # a city is a few tens of MB: read once per process
        return dict(out)

    def raw_label(self, i: int) -> np.ndarray:
        return read_label(self.samples[i].label, colour="max")

    def units(self, max_pairs: int = 8) -> dict[str, Any]:
        if not self.samples:
            return {}
        firsts = range(min(len(self), max_pairs))
        for i in firsts:
            self.load_arrays(i)  # cached: the range is of the stored values, before any standardisation
        lo, hi = min(self._ranges[i][0] for i in firsts), max(self._ranges[i][1] for i in firsts)
        return {"dtype": "uint16", "range": [lo, hi], "observed": [lo, hi], "product": "L1C",
                "band_names": list(self.band_names)}
