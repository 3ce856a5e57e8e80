"""Bi-temporal change-detection datasets.

:class:`ChangeDataset` reads ``root/{split}/{A,B,label}/<name>.<ext>`` (LEVIR-CD family), flat
``root/{A,B,label}`` folders, or name lists (``list/{split}.txt``), with configurable folder names and
suffixes, PNG/JPG/TIFF inputs with any number of bands, and the usual label encodings.
:class:`BandonDataset` reads BANDON's ``imgs/<city>/<t>`` layout. Dataset presets (official layouts)
live in :mod:`changekit.data.presets`.

An item is a dict (the project's data contract): ``t1``/``t2`` float32 (C, H, W) normalised, ``label``
int64 (H, W) with values ``0..num_classes-1`` and ``ignore_index`` (absent for prediction sets),
``name`` (str).

Problems are :class:`~changekit.errors.DataError` naming the file and the fix: at construction (names
only, fast) and at load (sizes, bands, label values). :meth:`ChangeDataset.validate` reads every file.
"""

from __future__ import annotations

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
    "ChangeDataset",
    "BandonDataset",
    "SegmentationDataset",
    "Sample",
    "ValidationReport",
    "decode_label",
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
    """File paths of one pair (``label``/``extra`` may be None/empty)."""

    name: str
    t1: Path
    t2: Path
    label: Path | None = None
    extra: dict[str, Path] = field(default_factory=dict)


@dataclass
class ValidationReport:
    """What :meth:`ChangeDataset.validate` found: statistics and a list of problems (one line each)."""

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


class ChangeDataset(Dataset):
    """Bi-temporal change-detection dataset (see module docstring for the item dict).

    Args:
        root: dataset root folder.
        split: ``train``/``val``/``test``/...; ``None`` for a flat ``root/{A,B,label}`` folder.
        dirs: folder names of date 1, date 2 and the label (``("Image1", "Image2", "label")`` for S2Looking).
        suffixes: one suffix for all folders or one per folder (str, list of alternatives, or ``None`` = any
            image extension). Example: ``(".jpg", ".jpg", [".png", ".tif"])``.
        split_dir: template of the folder (under ``root``) holding ``dirs``; ``"{split}"`` (default) or
            ``None``/``""`` when ``dirs`` sit directly under ``root`` (list-file datasets such as WHU-CD).
        list_file: optional names list, e.g. ``"list/{split}.txt"`` (relative to ``root``); one name a line,
            with or without extension. Without it, names come from the date-1 folder listing.
        label_encoding: see :data:`LABEL_ENCODINGS`.
        ignore_value: stored label value meaning "ignore" (mapped to ``ignore_index``); ``None`` for none.
        ignore_index: value of ignored pixels in the returned label (255).
        num_classes: classes of the (decoded) label.
        bands: 0-based band indices to keep from each image (e.g. ``[3, 2, 1]``).
        in_channels: expected band count after selection; a different count is a DataError.
        labels: ``True`` (required), ``False`` (prediction set: not read) or ``"auto"`` (read if the label
            folder exists).
        transforms: callable on a dict of numpy arrays (``t1``/``t2`` float32 HWC, ``label`` int64 HW) returning
            the item; default: normalise with ``mean``/``std`` and convert to tensors.
        mean, std: normalisation statistics (stored units) for the default transforms; a preset name
            (``"imagenet"``, ``"clip"``) or per-band lists. Default ``"imagenet"``.
        strict: raise on naming problems at construction (``False`` collects them in ``self.problems``;
            used by ``changekit check-dataset``).
        preset: name shown in messages.
    """

    #: whether a sample's file headers tell its size and bands (``validate(full=False)``); False for samples that
    #: are windows of files or folders of band files, which are then always read in full
    HEADERS_TELL = True

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = "train",
        *,
        dirs: Sequence[str] = ("A", "B", "label"),
        suffixes: Suffix | Sequence[Suffix] = ".png",
        split_dir: str | None = "{split}",
        list_file: str | os.PathLike | None = None,
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
        text_classes: bool = False,
        text_top_k: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        if len(dirs) != 3:
            raise ConfigError(f"dirs={dirs!r}: give three folder names (date 1, date 2, label).")
        self.dirs = tuple(dirs)
        if isinstance(suffixes, str) or suffixes is None:
            suffixes = (suffixes, suffixes, suffixes)
        elif len(suffixes) != 3:
            raise ConfigError(f"suffixes={suffixes!r}: give one suffix or three (date 1, date 2, label).")
        self.suffixes = tuple(_as_suffixes(s) for s in suffixes)
        self.split_dir = split_dir
        self.list_file = list_file
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
        self.samples: list[Sample] = self._scan(strict)
        if strict and self.problems:
            raise DataError(self._problem_message(self.problems))
        # Per-image class names for language-driven models (CLIPFormer prompts), cached by `changekit clip-labels`.
        self.text_classes: dict[Path, dict[str, list[str]]] | None = None
        if text_classes:
            from changekit.data.text_classes import read_clip_classes

            folders = {p.parent for s in self.samples for p in (s.t1, s.t2)}
            self.text_classes = {f: read_clip_classes(f, text_top_k) for f in sorted(folders)}

    # ------------------------------------------------------------------ construction
    @property
    def base_dir(self) -> Path:
        if self.split_dir and self.split is not None:
            return self.root / self.split_dir.format(split=self.split)
        return self.root

    @property
    def has_labels(self) -> bool:
        return self._has_labels

    def _problem_message(self, problems: list[str]) -> str:
        what = f"dataset {self.preset or 'folder'} at {self.root}" + (f" (split {self.split!r})" if self.split else "")
        if len(problems) == 1:
            return f"{what}: {problems[0]}"
        return f"{what}: {len(problems)} problems:\n  - " + "\n  - ".join(problems[:20]) + (
            f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")

    def _expected_layout(self) -> str:
        base = self.split_dir.format(split=self.split) + "/" if self.split_dir and self.split else ""
        return f"{self.root}/{base}{{{','.join(self.dirs)}}}/<name>{self.suffixes[0][0] if len(self.suffixes[0]) == 1 else '.<ext>'}"

    def _scan(self, strict: bool) -> list[Sample]:
        """Find the samples from names only; naming problems go to ``self.problems``."""
        P = self.problems
        if not self.root.is_dir():
            P.append(f"root folder {self.root} does not exist. Set data.root to the dataset folder.")
            self._has_labels = False
            return []
        base = self.base_dir
        if not base.is_dir():
            have = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            P.append(f"split folder {base} is missing (root holds: {', '.join(have) or 'nothing'}). "
                     f"Expected layout {self._expected_layout()}; check the root and the split name.")
            self._has_labels = False
            return []
        d1, d2, dl = (base / d for d in self.dirs)
        for d in (d1, d2):
            if not d.is_dir():
                P.append(f"image folder {d} is missing. Expected layout {self._expected_layout()}; "
                         "set `dirs` to the dataset's folder names.")
        label_dir_exists = dl.is_dir()
        if self.labels_mode == "auto":
            self._has_labels = label_dir_exists
        else:
            self._has_labels = bool(self.labels_mode)
            if self._has_labels and not label_dir_exists:
                P.append(f"label folder {dl} is missing. Add the labels, or set labels: false for a "
                         "prediction-only set.")
        if P:
            return []

        s1, s2, sl = self.suffixes
        if self.list_file is not None:
            lf = Path(str(self.list_file).format(split=self.split))
            lf = lf if lf.is_absolute() else self.root / lf
            if not lf.is_file():
                P.append(f"name list {lf} is missing. Create it (one name a line) or fix list_file.")
                return []
            names = [ln.strip().split()[0] for ln in lf.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            samples = []
            missing: dict[str, list[str]] = {}
            for n in names:
                p1, p2 = _resolve(d1, n, s1), _resolve(d2, n, s2)
                pl = _resolve(dl, n, sl) if self._has_labels else None
                for key, p, d in (("1", p1, d1), ("2", p2, d2), ("l", pl, dl)):
                    if p is None and (key != "l" or self._has_labels):
                        missing.setdefault(str(d), []).append(n)
                if p1 and p2 and (pl or not self._has_labels):
                    stem = Path(n).stem if Path(n).suffix.lower() in IMAGE_EXTS else n
                    samples.append(Sample(stem, p1, p2, pl))
            for d, ns in missing.items():
                P.append(f"{len(ns)} name(s) listed in {lf} have no file in {d}: {_fmt_names(ns)}. "
                         "Fix the list or add the files (check suffixes).")
        else:
            f1, f2 = _list_dir(d1, s1), _list_dir(d2, s2)
            fl = _list_dir(dl, sl) if self._has_labels else {}
            for a, fa, b, fb in ((d1, f1, d2, f2), (d2, f2, d1, f1)):
                only = set(fa) - set(fb)
                if only:
                    P.append(f"{len(only)} file(s) in {a} have no partner in {b}: {_fmt_names(only)}. "
                             "A/B names must match; remove or rename them.")
            if self._has_labels:
                both = set(f1) & set(f2)
                nolab = both - set(fl)
                if nolab:
                    P.append(f"{len(nolab)} pair(s) have no label in {dl}: {_fmt_names(nolab)}. "
                             "Add the labels (check the label suffix) or set labels: false.")
                extra = set(fl) - both
                if extra:
                    P.append(f"{len(extra)} label(s) in {dl} have no image pair: {_fmt_names(extra)}.")
            names = sorted(set(f1) & set(f2) & (set(fl) if self._has_labels else set(f1)))
            samples = [Sample(n, f1[n], f2[n], fl.get(n)) for n in names]
        if not samples and not P:
            P.append(f"no image pairs found (layout {self._expected_layout()}). The dataset is empty: check "
                     "the root, split, folder names and suffixes.")
        return samples

    # ------------------------------------------------------------------ loading
    def __len__(self) -> int:
        return len(self.samples)

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

    def load_arrays(self, i: int) -> dict[str, Any]:
        """Read and check one sample: ``t1``/``t2`` float32 HWC, ``label`` int64 HW (if labelled), ``name``."""
        s = self.samples[i]
        t1 = self._read_image(s.t1)
        t2 = self._read_image(s.t2)
        if t1.shape[:2] != t2.shape[:2]:
            raise DataError(f"{s.t2}: size {t2.shape[1]}x{t2.shape[0]} differs from date 1 {s.t1} "
                            f"({t1.shape[1]}x{t1.shape[0]}). Both dates must cover the same pixel grid; "
                            "resample or crop them to match.")
        if t1.shape[2] != t2.shape[2]:
            raise DataError(f"{s.t2}: has {t2.shape[2]} band(s) but date 1 {s.t1} has {t1.shape[2]}. "
                            "Both dates need the same bands.")
        out: dict[str, Any] = {"t1": t1, "t2": t2, "name": s.name}
        if self._has_labels and s.label is not None:
            out["label"] = self._read_label_for(s, t1.shape[:2])
        for k, p in s.extra.items():
            out[k] = self.load_extra(k, p, t1.shape[:2])
        if self.text_classes is not None:
            out["classes_a"] = self._classes_of(s.t1)
            out["classes_b"] = self._classes_of(s.t2)
        return out

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
                            f"({hw[1]}x{hw[0]}, {s.t1}). Labels must match the image grid.")
        return lab

    def _classes_of(self, image: Path) -> list[str]:
        table = self.text_classes[image.parent]
        if image.stem not in table:
            raise DataError(f"{image}: no CLIP class list in {image.parent.name}_clipcls.json; "
                            f"re-run `changekit clip-labels {image.parent}`")
        return table[image.stem]

    def load_extra(self, key: str, path: Path, hw: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict[str, Any]:
        """The transformed sample, plus ``hw``: its size before any padding (predictions are cropped back to it)."""
        arrays = self.load_arrays(i)
        h, w = arrays["t1"].shape[:2]
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
                if full:
                    arrs = self.load_arrays(i)
                    h, w, c = arrs["t1"].shape
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
                else:
                    h1 = image_shape(s.t1)
                    h2 = image_shape(s.t2)
                    if h1[:2] != h2[:2]:
                        raise DataError(f"{s.t2}: size {h2[1]}x{h2[0]} differs from date 1 {s.t1} ({h1[1]}x{h1[0]}).")
                    nb = len(self.bands) if self.bands is not None else h1[2]
                    if self.in_channels is not None and nb != self.in_channels:
                        raise DataError(f"{s.t1}: has {nb} band(s) but the config expects in_channels={self.in_channels}.")
                    if s.label is not None and self._has_labels:
                        hl = image_shape(s.label)
                        if hl[:2] != h1[:2]:
                            raise DataError(f"{s.label}: label size {hl[1]}x{hl[0]} differs from the images ({h1[1]}x{h1[0]}).")
                    rep.sizes[h1[:2]] += 1
                    rep.bands[nb] += 1
            except DataError as e:
                rep.problems.append(str(e))
            if progress is not None:
                progress(i)
        if len(rep.bands) > 1 and self.in_channels is None:
            rep.problems.append(f"images have different band counts {dict(rep.bands)}; set `bands:` / in_channels.")
        if raise_errors and rep.problems:
            raise DataError(self._problem_message(rep.problems))
        return rep

    def units(self, max_pairs: int = 8) -> dict[str, Any]:
        """The stored units of the images: ``{"dtype": "uint8", "range": [lo, hi], "observed": [min, max]}``
        from up to ``max_pairs`` pairs spread over the set (both dates, selected bands). ``range`` is the
        dtype's range for 8-bit data and the observed one otherwise; it is what a checkpoint records and
        what evaluation data are compared against (:func:`check_units`)."""
        if not self.samples:
            return {}
        step = max(1, len(self.samples) // max_pairs)
        dtypes, lo, hi = set(), math.inf, -math.inf
        for s in self.samples[::step][:max_pairs]:
            for path in (s.t1, s.t2):
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


class BandonDataset(ChangeDataset):
    """BANDON (Pang et al., 2023) as distributed:

    ``{split}/imgs/<city>/<t>/<name>.jpg``; change labels ``{split}/labels_unch0ch1ig255/<city>/<tA>VS<tB>/
    <name>.png`` (train: 0 unchanged, 1 changed, 255 ignore) or ``{split}/labels/<city>/<tA>VS<tB>/<name>.png``
    (val/test: 0/255); building (semantic) labels ``{split}/building_labels/<city>/<t>/<name>.png``
    (0 background, 1 roof, 2 facade). Names are ``<city>/<tA>VS<tB>/<name>``. With ``semantic=True`` the item
    also carries ``label_sem1``/``label_sem2`` (int64 HW). Optional ``list_file`` lines as written by open-cd's
    ``generate_bandon_txt.py`` (``city/t1/name city/t2/name city/t1VSt2/name ...``) restrict the names.
    """

    LABEL_DIRS = (("labels_unch0ch1ig255", "0-1"), ("labels", "0-255"))

    def __init__(self, root, split="train", *, semantic: bool = False, semantic_classes: int = 3, **kw):
        self.semantic = semantic
        self.semantic_classes = semantic_classes
        kw.setdefault("suffixes", (".jpg", ".jpg", ".png"))
        kw.setdefault("dirs", ("imgs", "imgs", "labels"))
        super().__init__(root, split, **kw)

    def _scan(self, strict: bool) -> list[Sample]:
        P = self.problems
        self._has_labels = False
        base = self.base_dir
        if not base.is_dir():
            P.append(f"split folder {base} is missing. Expected BANDON layout {self.root}/<split>/imgs/<city>/<t>/"
                     "<name>.jpg with labels_unch0ch1ig255/ (train) or labels/ (val/test).")
            return []
        imgs = base / "imgs"
        if not imgs.is_dir():
            P.append(f"image folder {imgs} is missing (BANDON keeps images in <split>/imgs/<city>/<t>/).")
            return []
        label_root = None
        for d, enc in self.LABEL_DIRS:
            if (base / d).is_dir():
                label_root, self.label_encoding = base / d, enc
                self.ignore_value = 255 if enc == "0-1" else None
                break
        if self.labels_mode is True and label_root is None:
            P.append(f"no change-label folder under {base} (labels_unch0ch1ig255/ or labels/). Add it or set labels: false.")
            return []
        self._has_labels = label_root is not None and self.labels_mode is not False
        img_sfx, lab_sfx = self.suffixes[0], self.suffixes[2]
        wanted = None
        if self.list_file is not None:
            lf = Path(str(self.list_file).format(split=self.split))
            lf = lf if lf.is_absolute() else self.root / lf
            if not lf.is_file():
                P.append(f"name list {lf} is missing.")
                return []
            wanted = {ln.split()[2] if len(ln.split()) >= 3 else ln.strip() for ln in lf.read_text().splitlines() if ln.strip()}
        samples: list[Sample] = []
        if self._has_labels:
            for city in sorted(p.name for p in label_root.iterdir() if p.is_dir()):
                for pair in sorted(p.name for p in (label_root / city).iterdir() if p.is_dir()):
                    if "VS" not in pair:
                        P.append(f"{label_root / city / pair}: folder name must be <tA>VS<tB> (e.g. t1VSt2).")
                        continue
                    ta, tb = pair.split("VS", 1)
                    for stem, lp in sorted(_list_dir(label_root / city / pair, lab_sfx).items()):
                        name = f"{city}/{pair}/{stem}"
                        if wanted is not None and name not in wanted:
                            continue
                        p1 = _resolve(imgs / city / ta, stem, img_sfx)
                        p2 = _resolve(imgs / city / tb, stem, img_sfx)
                        for p, t in ((p1, ta), (p2, tb)):
                            if p is None:
                                P.append(f"{lp}: no image {imgs / city / t / stem}{img_sfx[0]} for this label.")
                        if p1 is None or p2 is None:
                            continue
                        extra = {}
                        if self.semantic:
                            for k, t in (("label_sem1", ta), ("label_sem2", tb)):
                                sp = _resolve(base / "building_labels" / city / t, stem, lab_sfx)
                                if sp is None:
                                    P.append(f"{lp}: no building label {base / 'building_labels' / city / t / stem}.png.")
                                else:
                                    extra[k] = sp
                        samples.append(Sample(name, p1, p2, lp, extra))
        else:
            # prediction: consecutive dates of each city
            for city in sorted(p.name for p in imgs.iterdir() if p.is_dir()):
                times = sorted(p.name for p in (imgs / city).iterdir() if p.is_dir())
                for ta, tb in zip(times, times[1:]):
                    f1, f2 = _list_dir(imgs / city / ta, img_sfx), _list_dir(imgs / city / tb, img_sfx)
                    for stem in sorted(set(f1) & set(f2)):
                        samples.append(Sample(f"{city}/{ta}VS{tb}/{stem}", f1[stem], f2[stem]))
        if not samples and not P:
            P.append(f"no BANDON samples found under {base}. The dataset is empty: check the root and split.")
        return samples

    def load_extra(self, key: str, path: Path, hw: tuple[int, int]) -> np.ndarray:
        lab = decode_label(read_label(path), "index", ignore_value=255, ignore_index=self.ignore_index,
                           num_classes=self.semantic_classes, path=path)
        if lab.shape != tuple(hw):
            raise DataError(f"{path}: building label size {lab.shape[::-1]} differs from the images {hw[::-1]}.")
        return lab


def check_units(found: dict[str, Any], trained: dict[str, Any], what: str) -> None:
    """Refuse data whose stored units cannot be those the model was trained on (:meth:`ChangeDataset.units`):
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


class SegmentationDataset(ChangeDataset):
    """Single-date semantic segmentation in mmseg's layout: ``<root>/<img_dir>/<split>/<name>`` and
    ``<root>/<ann_dir>/<split>/<name>`` (ISPRS Potsdam / Vaihingen as mmseg's converters cut them, LoveDA).

    Items carry ``t1`` (the image), ``label`` and ``name``: the paired transforms and the engine treat a sample
    without ``t2`` as one date. ``dirs`` is ``(img_dir, ann_dir)``; ``suffixes`` one suffix or (image, label).
    """

    def __init__(self, root, split="train", *, dirs=("img_dir", "ann_dir"), suffixes=".png", **kw):
        if len(dirs) != 2:
            raise ConfigError(f"dirs={dirs!r}: a segmentation dataset takes two folder names (images, labels).")
        if not isinstance(suffixes, str) and suffixes is not None and len(suffixes) == 2:
            suffixes = (suffixes[0], suffixes[0], suffixes[1])
        kw.setdefault("split_dir", None)
        super().__init__(root, split, dirs=(dirs[0], dirs[0], dirs[1]), suffixes=suffixes, **kw)

    def _expected_layout(self) -> str:
        return f"{self.root}/{{{self.dirs[0]},{self.dirs[2]}}}/{self.split}/<name>"

    @property
    def base_dir(self) -> Path:
        return self.root

    def _scan(self, strict: bool) -> list[Sample]:
        self._has_labels = False
        samples = self._scan_folders(self.root / self.dirs[0] / str(self.split), self.root / self.dirs[2] / str(self.split))
        if not samples and not self.problems:
            self.problems.append(f"no images found (layout {self._expected_layout()}). The dataset is empty: check "
                                 "the root, split, folder names and suffixes.")
        return samples

    def _scan_folders(self, img: Path, ann: Path) -> list[Sample]:
        """The samples of one image folder and its label folder (problems to ``self.problems``)."""
        P = self.problems
        if not img.is_dir():
            P.append(f"image folder {img} is missing. Expected layout {self._expected_layout()}; check the root, "
                     "the split name and `dirs`.")
            return []
        self._has_labels = ann.is_dir() if self.labels_mode == "auto" else bool(self.labels_mode)
        if self._has_labels and not ann.is_dir():
            P.append(f"label folder {ann} is missing. Add the labels, or set labels: false for a prediction-only set.")
            return []
        fi = _list_dir(img, self.suffixes[0])
        fl = _list_dir(ann, self.suffixes[2]) if self._has_labels else {}
        if self._has_labels:
            nolab, extra = set(fi) - set(fl), set(fl) - set(fi)
            if nolab:
                P.append(f"{len(nolab)} image(s) in {img} have no label in {ann}: {_fmt_names(nolab)}. "
                         "Add the labels (check the label suffix) or set labels: false.")
            if extra:
                P.append(f"{len(extra)} label(s) in {ann} have no image: {_fmt_names(extra)}.")
        names = sorted(set(fi) & set(fl)) if self._has_labels else sorted(fi)
        return [Sample(n, fi[n], fi[n], fl.get(n)) for n in names]

    def load_arrays(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        image = self._read_image(s.t1)
        out: dict[str, Any] = {"t1": image, "name": s.name}
        if self._has_labels and s.label is not None:
            out["label"] = self._read_label_for(s, image.shape[:2])
        return out
