"""What every dataset shares: samples, label decoding, checks, and the base classes of the two kinds of dataset.

:class:`BaseDataset` finds the samples (each subclass scans its own layout), reads and checks images and labels,
validates every file and reports the stored units. Its two kinds are siblings:

* :class:`PairDataset`: two dates per sample (change detection). The folder layouts of the LEVIR-CD family are
  :class:`changekit.data.folders.ChangeDataset`; BANDON, OSCD and SZTAKI have modules of their own.
* :class:`ImageDataset`: one image per sample (single-date segmentation): mmseg's folders
  (:class:`changekit.data.folders.SegmentationDataset`), LoveDA's and the ISPRS tiles.

Dataset presets (official layouts) live in :mod:`changekit.data.presets`.

An item is a dict (the project's data contract): the images float32 (C, H, W) normalised, ``t1``/``t2`` for a pair
and ``image`` for one date; ``label`` int64 (H, W) with values ``0..num_classes-1`` and ``ignore_index`` (absent
for prediction sets); ``name`` (str); ``hw`` the size before padding.

Problems are :class:`~changekit.errors.DataError` naming the file and the fix: at construction (names only, fast)
and at load (sizes, bands, label values). :meth:`BaseDataset.validate` reads every file.
"""

from __future__ import annotations

import inspect
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from changekit.data.io import IMAGE_EXTS, _read_raw, image_shape, read_image, read_label
from changekit.errors import ConfigError, DataError

__all__ = [
    "LABEL_ENCODINGS",
    "BaseDataset",
    "PairDataset",
    "ImageDataset",
    "Sample",
    "ValidationReport",
    "decode_label",
    "check_units",
    "accepted_args",
]

#: ``binary``: auto-detect per file ({0,255} -> 0/1; {0,1} and {0,1,ignore} -> as is).
#: ``0-255`` (alias ``to_binary``): grey masks, >=128 -> 1 (JPEG masks thresholded, PNG must be 0/255).
#: ``0-1``: already 0/1 (+ ``ignore_value``). ``index``: class indices 0..num_classes-1 (+ ``ignore_value``).
#: ``reduce-zero`` (mmseg's ``reduce_zero_label``): stored 0 is ignored, 1..num_classes become 0..num_classes-1
#: (LoveDA's no-data, ISPRS Potsdam/Vaihingen boundary pixels in mmseg's converted layout).
LABEL_ENCODINGS = ("binary", "0-255", "0-1", "index", "reduce-zero")
_ENCODING_ALIASES = {"to_binary": "0-255", "0/255": "0-255", "0/1": "0-1", "auto": "binary", "none": "index",
                     "reduce_zero_label": "reduce-zero"}

Suffix = str | Sequence[str] | None


@dataclass
class Sample:
    """File paths of one sample: its images (one per date), its label and extra files (may be None / empty)."""

    name: str
    images: tuple[Path, ...]
    label: Path | None = None
    extra: dict[str, Path] = field(default_factory=dict)


@dataclass
class ValidationReport:
    """What :meth:`BaseDataset.validate` found: statistics and a list of problems (one line each)."""

    split: str | None
    n: int = 0
    sizes: Counter = field(default_factory=Counter)  # (H, W) -> count
    bands: Counter = field(default_factory=Counter)  # band count -> count
    dtypes: Counter = field(default_factory=Counter)
    label_values: Counter = field(default_factory=Counter)  # raw stored value -> pixel count
    changed: int = 0  # decoded label pixels == 1 (or >0 for multi-class)
    valid: int = 0  # decoded label pixels != ignore
    problems: list[str] = field(default_factory=list)

    @property
    def change_ratio(self) -> float:
        return self.changed / self.valid if self.valid else 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def normalise_encoding(encoding: str) -> str:
    enc = _ENCODING_ALIASES.get(encoding, encoding)
    if enc not in LABEL_ENCODINGS:
        raise ConfigError(f"label_encoding={encoding!r} is not one of {LABEL_ENCODINGS} "
                          f"(aliases {sorted(_ENCODING_ALIASES)}).")
    return enc


def decode_label(
    raw: np.ndarray,
    encoding: str = "binary",
    *,
    ignore_value: int | None = 255,
    ignore_index: int = 255,
    num_classes: int = 2,
    lossy: bool = False,
    path: str | os.PathLike = "<label>",
) -> np.ndarray:
    """Stored label values -> int64 class map with ``ignore_index``; unexpected values -> DataError.

    ``lossy``: the file is JPEG, so 0/255 masks carry compression noise and are thresholded at 128.
    """
    enc = normalise_encoding(encoding)
    raw = np.asarray(raw).astype(np.int64, copy=False)
    values = np.unique(raw)

    def bad(expected: str, fix: str) -> DataError:
        shown = ", ".join(str(v) for v in values[:12]) + (" ..." if len(values) > 12 else "")
        return DataError(f"{path}: label values {{{shown}}} are outside the expected set {expected} for "
                         f"label_encoding={enc!r}. {fix}")

    if enc == "binary":
        vs = set(values.tolist())
        if lossy:
            enc = "0-255"
        elif vs <= {0, 255} and 1 not in vs and (ignore_value != 255 or vs == {0, 255} or vs == {255}):
            # 0/255 masks. (With 0/1/255 data, a file holding only {0,255} is read as 0/255, so datasets
            # with an ignore value should set label_encoding: 0-1 explicitly.)
            enc = "0-255"
        elif vs <= {0, 1} | ({ignore_value} if ignore_value is not None else set()):
            enc = "0-1"
        else:
            raise bad("{0,255} or {0,1}" + (f" (+{ignore_value} ignore)" if ignore_value is not None else ""),
                      "Set label_encoding (0-255, 0-1 or index) and num_classes to match the data.")
    if enc == "0-255":
        if lossy:
            return (raw >= 128).astype(np.int64)
        if not set(values.tolist()) <= {0, 255}:
            raise bad("{0,255}", "Binary masks must hold 0 (unchanged) and 255 (changed); "
                      "use label_encoding: 0-1 or index for other encodings.")
        return (raw >= 128).astype(np.int64)
    if enc == "reduce-zero":
        allowed = set(range(num_classes + 1)) | ({ignore_value} if ignore_value is not None else set())
        if not set(values.tolist()) <= allowed:
            raise bad("{0.." + str(num_classes) + "}", f"reduce-zero labels store 0 (ignored) and 1..{num_classes} "
                      "(the classes); check num_classes and the label encoding.")
        out = raw - 1
        out[raw == 0] = ignore_index
        if ignore_value is not None:
            out[raw == ignore_value] = ignore_index
        return out
    # 0-1 / index
    k = 2 if enc == "0-1" else num_classes
    allowed = set(range(k)) | ({ignore_value} if ignore_value is not None else set())
    if not set(values.tolist()) <= allowed:
        hint = ("The masks look like 0/255: use label_encoding: 0-255 (or binary)." if 255 in values and
                ignore_value != 255 else "Fix the label files or set label_encoding/num_classes/ignore_value.")
        raise bad("{" + ",".join(map(str, sorted(allowed))) + "}", hint)
    out = raw.copy()
    if ignore_value is not None and ignore_value != ignore_index:
        out[raw == ignore_value] = ignore_index
    return out


def _as_suffixes(s: Suffix) -> tuple[str, ...]:
    if s is None:
        return IMAGE_EXTS + tuple(e.upper() for e in IMAGE_EXTS)
    if isinstance(s, str):
        return (s,)
    return tuple(s)


def _strip_suffix(fname: str, suffixes: tuple[str, ...]) -> str | None:
    for s in sorted(suffixes, key=len, reverse=True):
        if s == "":
            return fname
        if fname.endswith(s):
            return fname[: -len(s)]
    return None


def _list_dir(d: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """stem -> path for files in ``d`` ending with one of ``suffixes`` (hidden files skipped)."""
    out: dict[str, Path] = {}
    with os.scandir(d) as it:
        for e in it:
            if e.name.startswith(".") or not e.is_file():
                continue
            stem = _strip_suffix(e.name, suffixes)
            if stem is not None and stem not in out:
                out[stem] = Path(e.path)
    return out


def _resolve(d: Path, name: str, suffixes: tuple[str, ...]) -> Path | None:
    """File for ``name`` in ``d``: the name as given (list entries may carry their extension) or name+suffix."""
    for s in suffixes:
        p = d / (name + s)
        if p.is_file():
            return p
    p = d / name
    if Path(name).suffix.lower() in IMAGE_EXTS and p.is_file():
        return p
    return None


def _fmt_names(names: Sequence[str], k: int = 5) -> str:
    names = sorted(names)
    return ", ".join(names[:k]) + (f" ... ({len(names)} in all)" if len(names) > k else "")


def accepted_args(cls: type) -> set[str]:
    """The keyword arguments a dataset class takes, its base classes' included (those it passes on)."""
    accepted: set[str] = set()
    for c in cls.__mro__:
        if "__init__" in vars(c) and c not in (object, Dataset):
            accepted |= set(inspect.signature(c.__init__).parameters)
    return accepted - {"self", "kw", "kwargs"}


class BaseDataset(Dataset):
    """What every dataset does: find its samples, read and check images and labels, validate, report units.

    A subclass scans its own layout (:meth:`_scan`) and reads a sample (:meth:`load_arrays`); the constructor
    arguments here are those every dataset honours.

    Args:
        root: dataset root folder.
        split: ``train``/``val``/``test``/...; ``None`` for a flat folder where the layout allows one.
        label_encoding: see :data:`LABEL_ENCODINGS`.
        ignore_value: stored label value meaning "ignore" (mapped to ``ignore_index``); ``None`` for none.
        ignore_index: value of ignored pixels in the returned label (255).
        num_classes: classes of the (decoded) label.
        bands: 0-based band indices to keep from each image (e.g. ``[3, 2, 1]``).
        in_channels: expected band count after selection; a different count is a DataError.
        labels: ``True`` (required), ``False`` (prediction set: not read) or ``"auto"`` (read if present).
        transforms: callable on a dict of numpy arrays (images float32 HWC, ``label`` int64 HW) returning the item;
            default: normalise with ``mean``/``std`` and convert to tensors.
        mean, std: normalisation statistics (stored units) for the default transforms; a preset name
            (``"imagenet"``, ``"clip"``) or per-band lists. Default ``"imagenet"``.
        strict: raise on naming problems at construction (``False`` collects them in ``self.problems``;
            used by ``changekit check-dataset``).
        preset: name shown in messages.
    """

    #: the item's image keys, one per date
    IMAGE_KEYS: tuple[str, ...] = ()
    #: whether a sample's file headers tell its size and bands (``validate(full=False)``); False for samples that
    #: are windows of files or folders of band files, which are then always read in full
    HEADERS_TELL = True

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = "train",
        *,
        label_encoding: str = "binary",
        ignore_value: int | None = 255,
        ignore_index: int = 255,
        num_classes: int = 2,
        bands: Sequence[int] | None = None,
        in_channels: int | None = None,
        labels: bool | str = True,
        transforms: Callable[[dict], dict] | None = None,
        mean: str | Sequence[float] | None = "imagenet",
        std: Sequence[float] | None = None,
        strict: bool = True,
        preset: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.label_encoding = normalise_encoding(label_encoding)
        self.ignore_value = ignore_value
        self.ignore_index = ignore_index
        self.num_classes = num_classes
        self.bands = list(bands) if bands is not None else None
        self.in_channels = in_channels
        self.labels_mode = labels
        self.preset = preset
        self.mean, self.std = mean, std
        if transforms is None:
            from changekit.data.transforms import build_transforms

            transforms = build_transforms(train=False, mean=mean, std=std, size_divisor=None,
                                          ignore_index=ignore_index)
        self.transforms = transforms
        self.problems: list[str] = []
        self.samples, self._has_labels = self._scan()
        if strict and self.problems:
            raise DataError(self._problem_message(self.problems))

    # ------------------------------------------------------------------ construction
    def _scan(self) -> tuple[list[Sample], bool]:
        """The samples, found from names only, and whether they are labelled; naming problems go to
        ``self.problems``."""
        raise NotImplementedError

    def _expected_layout(self) -> str:
        raise NotImplementedError

    @property
    def has_labels(self) -> bool:
        return self._has_labels

    def _problem_message(self, problems: list[str]) -> str:
        what = f"dataset {self.preset or 'folder'} at {self.root}" + (f" (split {self.split!r})" if self.split else "")
        if len(problems) == 1:
            return f"{what}: {problems[0]}"
        return f"{what}: {len(problems)} problems:\n  - " + "\n  - ".join(problems[:20]) + (
            f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")

    # ------------------------------------------------------------------ loading
    def __len__(self) -> int:
        return len(self.samples)

    def load_arrays(self, i: int) -> dict[str, Any]:
        """Read and check one sample: its images float32 HWC (:attr:`IMAGE_KEYS`), ``label`` int64 HW (if
        labelled), ``name``."""
        raise NotImplementedError

    def _lossy(self, p: Path) -> bool:
        return p.suffix.lower() in (".jpg", ".jpeg")

    def _read_label_raw(self, path: Path) -> np.ndarray:
        return read_label(path, colour="max" if self.label_encoding in ("binary", "0-255") else "error")

    def raw_label(self, i: int) -> np.ndarray:
        """Sample ``i``'s label values as stored (what ``check-dataset`` counts)."""
        return self._read_label_raw(self.samples[i].label)

    def load_label(self, path: Path) -> np.ndarray:
        return decode_label(self._read_label_raw(path), self.label_encoding, ignore_value=self.ignore_value,
                            ignore_index=self.ignore_index, num_classes=self.num_classes,
                            lossy=self._lossy(path), path=path)

    def _read_image(self, path: Path) -> np.ndarray:
        """One image (selected bands, float32 HWC), its band count checked against ``in_channels``."""
        return self._check_channels(read_image(path, self.bands), path)

    def _check_channels(self, a: np.ndarray, path: Path) -> np.ndarray:
        """``a`` (an image of ``path``, bands selected) if its band count is ``in_channels``, else a DataError."""
        if self.in_channels is not None and a.shape[2] != self.in_channels:
            raise DataError(f"{path}: has {a.shape[2]} band(s) but the config expects in_channels="
                            f"{self.in_channels}. Select bands with `bands:` or change in_channels.")
        return a

    def _read_label_for(self, s: Sample, hw: tuple[int, int]) -> np.ndarray:
        """The decoded label of sample ``s``, checked to lie on the image grid ``hw``."""
        lab = self.load_label(s.label)
        if lab.shape != tuple(hw):
            raise DataError(f"{s.label}: label size {lab.shape[1]}x{lab.shape[0]} differs from the images "
                            f"({hw[1]}x{hw[0]}, {s.images[0]}). Labels must match the image grid.")
        return lab

    def __getitem__(self, i: int) -> dict[str, Any]:
        """The transformed sample, plus ``hw``: its size before any padding (predictions are cropped back to it)."""
        arrays = self.load_arrays(i)
        h, w = arrays[self.IMAGE_KEYS[0]].shape[:2]
        item = self.transforms(arrays)
        item["hw"] = torch.tensor([h, w])
        return item

    # ------------------------------------------------------------------ validation
    def validate(self, full: bool = True, raise_errors: bool = True, progress: Callable | None = None
                 ) -> ValidationReport:
        """Check every sample: headers only (``full=False``: sizes, band counts) or every pixel
        (``full=True``: also decodes images and label values). Collects all problems; raises one
        DataError listing them when ``raise_errors``. ``progress(i)`` is called after each sample. Datasets whose
        samples are not one file per date (``HEADERS_TELL = False``) are always read in full."""
        full = full or not self.HEADERS_TELL
        rep = ValidationReport(self.split, n=len(self.samples), problems=list(self.problems))
        for i, s in enumerate(self.samples):
            try:
                self._validate_full(i, rep) if full else self._validate_headers(s, rep)
            except DataError as e:
                rep.problems.append(str(e))
            if progress is not None:
                progress(i)
        if len(rep.bands) > 1 and self.in_channels is None:
            rep.problems.append(f"images have different band counts {dict(rep.bands)}; set `bands:` / in_channels.")
        if raise_errors and rep.problems:
            raise DataError(self._problem_message(rep.problems))
        return rep

    def _validate_full(self, i: int, rep: ValidationReport) -> None:
        arrs = self.load_arrays(i)
        h, w, c = arrs[self.IMAGE_KEYS[0]].shape
        rep.sizes[(h, w)] += 1
        rep.bands[c] += 1
        if "label" in arrs:
            raw = self.raw_label(i)
            v, n = np.unique(raw, return_counts=True)
            for a, b in zip(v.tolist(), n.tolist()):
                rep.label_values[a] += b
            lab = arrs["label"]
            valid = lab != self.ignore_index
            rep.valid += int(valid.sum())
            rep.changed += int(((lab > 0) & valid).sum())

    def _validate_headers(self, s: Sample, rep: ValidationReport) -> None:
        first = s.images[0]
        h1 = image_shape(first)
        for other in s.images[1:]:
            h2 = image_shape(other)
            if h1[:2] != h2[:2]:
                raise DataError(f"{other}: size {h2[1]}x{h2[0]} differs from date 1 {first} ({h1[1]}x{h1[0]}).")
        nb = len(self.bands) if self.bands is not None else h1[2]
        if self.in_channels is not None and nb != self.in_channels:
            raise DataError(f"{first}: has {nb} band(s) but the config expects in_channels={self.in_channels}.")
        if s.label is not None and self._has_labels:
            hl = image_shape(s.label)
            if hl[:2] != h1[:2]:
                raise DataError(f"{s.label}: label size {hl[1]}x{hl[0]} differs from the images ({h1[1]}x{h1[0]}).")
        rep.sizes[h1[:2]] += 1
        rep.bands[nb] += 1

    def units(self, max_pairs: int = 8) -> dict[str, Any]:
        """The stored units of the images: ``{"dtype": "uint8", "range": [lo, hi], "observed": [min, max]}``
        from up to ``max_pairs`` samples spread over the set (every date, selected bands). ``range`` is the
        dtype's range for 8-bit data and the observed one otherwise; it is what a checkpoint records and
        what evaluation data are compared against (:func:`check_units`)."""
        if not self.samples:
            return {}
        step = max(1, len(self.samples) // max_pairs)
        dtypes, lo, hi = set(), math.inf, -math.inf
        for s in self.samples[::step][:max_pairs]:
            for path in dict.fromkeys(s.images):
                raw = _read_raw(path, palette_indices=False)
                if self.bands is not None:
                    raw = raw[:, :, list(self.bands)]
                dtypes.add(raw.dtype.name)
                finite = raw[np.isfinite(raw)] if raw.dtype.kind == "f" else raw
                if finite.size:
                    lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
        dtype = dtypes.pop() if len(dtypes) == 1 else "mixed(" + ",".join(sorted(dtypes)) + ")"
        observed = [lo, hi] if lo <= hi else None
        rng = [0.0, 255.0] if dtype == "uint8" else observed
        return {"dtype": dtype, "range": rng, "observed": observed}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(preset={self.preset!r}, root={str(self.root)!r}, split={self.split!r}, "
                f"n={len(self)}, labels={self._has_labels})")


class PairDataset(BaseDataset):
    """Two dates per sample (``Sample.images`` = date 1, date 2): items carry ``t1`` and ``t2``."""

    IMAGE_KEYS = ("t1", "t2")

    def load_arrays(self, i: int) -> dict[str, Any]:
        """Read and check one pair: ``t1``/``t2`` float32 HWC, ``label`` int64 HW (if labelled), ``name``."""
        s = self.samples[i]
        p1, p2 = s.images
        t1, t2 = self._read_image(p1), self._read_image(p2)
        if t1.shape[:2] != t2.shape[:2]:
            raise DataError(f"{p2}: size {t2.shape[1]}x{t2.shape[0]} differs from date 1 {p1} "
                            f"({t1.shape[1]}x{t1.shape[0]}). Both dates must cover the same pixel grid; "
                            "resample or crop them to match.")
        if t1.shape[2] != t2.shape[2]:
            raise DataError(f"{p2}: has {t2.shape[2]} band(s) but date 1 {p1} has {t1.shape[2]}. "
                            "Both dates need the same bands.")
        out: dict[str, Any] = {"t1": t1, "t2": t2, "name": s.name}
        if self._has_labels and s.label is not None:
            out["label"] = self._read_label_for(s, t1.shape[:2])
        for k, p in s.extra.items():
            out[k] = self.load_extra(k, p, t1.shape[:2])
        return out

    def load_extra(self, key: str, path: Path, hw: tuple[int, int]) -> np.ndarray:
        """Further per-sample arrays (``Sample.extra``: BANDON's building labels)."""
        raise NotImplementedError(f"{type(self).__name__} has no extra file {key!r}")


class ImageDataset(BaseDataset):
    """One image per sample (single-date segmentation): items carry ``image``."""

    IMAGE_KEYS = ("image",)

    def load_arrays(self, i: int) -> dict[str, Any]:
        """Read and check one sample: ``image`` float32 HWC, ``label`` int64 HW (if labelled), ``name``."""
        s = self.samples[i]
        image = self._read_image(s.images[0])
        out: dict[str, Any] = {"image": image, "name": s.name}
        if self._has_labels and s.label is not None:
            out["label"] = self._read_label_for(s, image.shape[:2])
        return out

    def _scan_folders(self, img: Path, ann: Path, image_suffixes: tuple[str, ...],
                      label_suffixes: tuple[str, ...]) -> tuple[list[Sample], bool]:
        """The samples of one image folder and its label folder (problems to ``self.problems``), and whether they
        are labelled."""
        P = self.problems
        if not img.is_dir():
            P.append(f"image folder {img} is missing. Expected layout {self._expected_layout()}; check the root, "
                     "the split name and `dirs`.")
            return [], False
        labelled = ann.is_dir() if self.labels_mode == "auto" else bool(self.labels_mode)
        if labelled and not ann.is_dir():
            P.append(f"label folder {ann} is missing. Add the labels, or set labels: false for a prediction-only set.")
            return [], labelled
        fi = _list_dir(img, image_suffixes)
        fl = _list_dir(ann, label_suffixes) if labelled else {}
        if labelled:
            nolab, extra = set(fi) - set(fl), set(fl) - set(fi)
            if nolab:
                P.append(f"{len(nolab)} image(s) in {img} have no label in {ann}: {_fmt_names(nolab)}. "
                         "Add the labels (check the label suffix) or set labels: false.")
            if extra:
                P.append(f"{len(extra)} label(s) in {ann} have no image: {_fmt_names(extra)}.")
        names = sorted(set(fi) & set(fl)) if labelled else sorted(fi)
        return [Sample(n, (fi[n],), fl.get(n)) for n in names], labelled


def check_units(found: dict[str, Any], trained: dict[str, Any], what: str) -> None:
    """Refuse data whose stored units cannot be those the model was trained on (:meth:`BaseDataset.units`):
    another data type, or values far outside the training range. The message names the flags that fix it."""
    if not found or not trained:
        return
    lo, hi = trained.get("range") or [None, None]
    rng = f"values {lo:g}..{hi:g}" if lo is not None else "its recorded range"
    fix = ("rescale them with --data.input_range '[MIN, MAX]' (the stored values that correspond to the training "
           "range), or pass --data.check_units false to use them as they are")
    if found["dtype"] != trained.get("dtype"):
        raise DataError(f"{what}: the images are {found['dtype']} but the model was trained on {trained.get('dtype')} "
                        f"images ({rng}); {fix}")
    obs = found.get("observed")
    if obs and lo is not None and obs[1] > hi + 0.5 * (hi - lo):
        raise DataError(f"{what}: values reach {obs[1]:g} but the model was trained on {rng}; {fix}")
