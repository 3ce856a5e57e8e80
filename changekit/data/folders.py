"""The two generic folder layouts: image pairs (:class:`ChangeDataset`, the LEVIR-CD family) and mmseg's
single-date folders (:class:`SegmentationDataset`), with configurable folder names and suffixes, PNG/JPG/TIFF
inputs with any number of bands, and the usual label encodings."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from changekit.data.datasets import (
    ImageDataset,
    PairDataset,
    Sample,
    Suffix,
    _as_suffixes,
    _fmt_names,
    _list_dir,
    _resolve,
)
from changekit.data.io import IMAGE_EXTS
from changekit.errors import ConfigError, DataError

__all__ = ["ChangeDataset", "SegmentationDataset"]


class ChangeDataset(PairDataset):
    """Bi-temporal change detection in folders: ``root/{split}/{A,B,label}/<name>.<ext>`` (LEVIR-CD family), flat
    ``root/{A,B,label}`` folders, or name lists (``list/{split}.txt``).

    Args (besides :class:`~changekit.data.datasets.BaseDataset`'s):
        dirs: folder names of date 1, date 2 and the label (``("Image1", "Image2", "label")`` for S2Looking).
        suffixes: one suffix for all folders or one per folder (str, list of alternatives, or ``None`` = any
            image extension). Example: ``(".jpg", ".jpg", [".png", ".tif"])``.
        split_dir: template of the folder (under ``root``) holding ``dirs``; ``"{split}"`` (default) or
            ``None``/``""`` when ``dirs`` sit directly under ``root`` (list-file datasets such as WHU-CD).
        list_file: optional names list, e.g. ``"list/{split}.txt"`` (relative to ``root``); one name a line,
            with or without extension. Without it, names come from the date-1 folder listing.
        text_classes: per-image class names for language-driven models (CLIPFormer prompts), read from the
            ``<folder>_clipcls.json`` files ``changekit clip-labels`` writes (``text_top_k`` of them).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = "train",
        *,
        dirs: Sequence[str] = ("A", "B", "label"),
        suffixes: Suffix | Sequence[Suffix] = ".png",
        split_dir: str | None = "{split}",
        list_file: str | os.PathLike | None = None,
        text_classes: bool = False,
        text_top_k: int | None = None,
        **kw: Any,
    ) -> None:
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
        super().__init__(root, split, **kw)
        # Per-image class names for language-driven models (CLIPFormer prompts), cached by `changekit clip-labels`.
        self.text_classes: dict[Path, dict[str, list[str]]] | None = None
        if text_classes:
            from changekit.data.text_classes import read_clip_classes

            folders = {p.parent for s in self.samples for p in s.images}
            self.text_classes = {f: read_clip_classes(f, text_top_k) for f in sorted(folders)}

    @property
    def base_dir(self) -> Path:
        if self.split_dir and self.split is not None:
            return self.root / self.split_dir.format(split=self.split)
        return self.root

    def _expected_layout(self) -> str:
        base = self.split_dir.format(split=self.split) + "/" if self.split_dir and self.split else ""
        return f"{self.root}/{base}{{{','.join(self.dirs)}}}/<name>{self.suffixes[0][0] if len(self.suffixes[0]) == 1 else '.<ext>'}"

    def _scan(self) -> tuple[list[Sample], bool]:
        P = self.problems
        if not self.root.is_dir():
            P.append(f"root folder {self.root} does not exist. Set data.root to the dataset folder.")
            return [], False
        base = self.base_dir
        if not base.is_dir():
            have = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            P.append(f"split folder {base} is missing (root holds: {', '.join(have) or 'nothing'}). "
                     f"Expected layout {self._expected_layout()}; check the root and the split name.")
            return [], False
        d1, d2, dl = (base / d for d in self.dirs)
        for d in (d1, d2):
            if not d.is_dir():
                P.append(f"image folder {d} is missing. Expected layout {self._expected_layout()}; "
                         "set `dirs` to the dataset's folder names.")
        labelled = dl.is_dir() if self.labels_mode == "auto" else bool(self.labels_mode)
        if labelled and not dl.is_dir():
            P.append(f"label folder {dl} is missing. Add the labels, or set labels: false for a "
                     "prediction-only set.")
        if P:
            return [], labelled
        if self.list_file is not None:
            samples = self._listed(d1, d2, dl, labelled)
        else:
            samples = self._listed_dirs(d1, d2, dl, labelled)
        if not samples and not P:
            P.append(f"no image pairs found (layout {self._expected_layout()}). The dataset is empty: check "
                     "the root, split, folder names and suffixes.")
        return samples, labelled

    def _listed(self, d1: Path, d2: Path, dl: Path, labelled: bool) -> list[Sample]:
        """The pairs a name list (``list_file``) names."""
        P = self.problems
        s1, s2, sl = self.suffixes
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
            pl = _resolve(dl, n, sl) if labelled else None
            for key, p, d in (("1", p1, d1), ("2", p2, d2), ("l", pl, dl)):
                if p is None and (key != "l" or labelled):
                    missing.setdefault(str(d), []).append(n)
            if p1 and p2 and (pl or not labelled):
                stem = Path(n).stem if Path(n).suffix.lower() in IMAGE_EXTS else n
                samples.append(Sample(stem, (p1, p2), pl))
        for d, ns in missing.items():
            P.append(f"{len(ns)} name(s) listed in {lf} have no file in {d}: {_fmt_names(ns)}. "
                     "Fix the list or add the files (check suffixes).")
        return samples

    def _listed_dirs(self, d1: Path, d2: Path, dl: Path, labelled: bool) -> list[Sample]:
        """The pairs whose names occur in both date folders (and the label folder)."""
        P = self.problems
        s1, s2, sl = self.suffixes
        f1, f2 = _list_dir(d1, s1), _list_dir(d2, s2)
        fl = _list_dir(dl, sl) if labelled else {}
        for a, fa, b, fb in ((d1, f1, d2, f2), (d2, f2, d1, f1)):
            only = set(fa) - set(fb)
            if only:
                P.append(f"{len(only)} file(s) in {a} have no partner in {b}: {_fmt_names(only)}. "
                         "A/B names must match; remove or rename them.")
        if labelled:
            both = set(f1) & set(f2)
            nolab = both - set(fl)
            if nolab:
                P.append(f"{len(nolab)} pair(s) have no label in {dl}: {_fmt_names(nolab)}. "
                         "Add the labels (check the label suffix) or set labels: false.")
            extra = set(fl) - both
            if extra:
                P.append(f"{len(extra)} label(s) in {dl} have no image pair: {_fmt_names(extra)}.")
        names = sorted(set(f1) & set(f2) & (set(fl) if labelled else set(f1)))
        return [Sample(n, (f1[n], f2[n]), fl.get(n)) for n in names]

    def load_arrays(self, i: int) -> dict[str, Any]:
        out = super().load_arrays(i)
        if self.text_classes is not None:
            s = self.samples[i]
            out["classes_a"] = self._classes_of(s.images[0])
            out["classes_b"] = self._classes_of(s.images[1])
        return out

    def _classes_of(self, image: Path) -> list[str]:
        table = self.text_classes[image.parent]
        if image.stem not in table:
            raise DataError(f"{image}: no CLIP class list in {image.parent.name}_clipcls.json; "
                            f"re-run `changekit clip-labels {image.parent}`")
        return table[image.stem]


class SegmentationDataset(ImageDataset):
    """Single-date semantic segmentation in mmseg's layout: ``<root>/<img_dir>/<split>/<name>`` and
    ``<root>/<ann_dir>/<split>/<name>`` (ISPRS Potsdam / Vaihingen as mmseg's converters cut them, LoveDA).

    Args (besides :class:`~changekit.data.datasets.BaseDataset`'s): ``dirs`` = ``(img_dir, ann_dir)``;
    ``suffixes``: one suffix or (image, label).
    """

    def __init__(self, root, split="train", *, dirs: Sequence[str] = ("img_dir", "ann_dir"),
                 suffixes: Suffix | Sequence[Suffix] = ".png", **kw: Any) -> None:
        if len(dirs) != 2:
            raise ConfigError(f"dirs={dirs!r}: a segmentation dataset takes two folder names (images, labels).")
        self.dirs = tuple(dirs)
        if isinstance(suffixes, str) or suffixes is None:
            suffixes = (suffixes, suffixes)
        elif len(suffixes) != 2:
            raise ConfigError(f"suffixes={suffixes!r}: give one suffix or two (image, label).")
        self.suffixes = tuple(_as_suffixes(s) for s in suffixes)
        super().__init__(root, split, **kw)

    def _expected_layout(self) -> str:
        return f"{self.root}/{{{self.dirs[0]},{self.dirs[1]}}}/{self.split}/<name>"

    def _scan(self) -> tuple[list[Sample], bool]:
        img, ann = (self.root / d / str(self.split) for d in self.dirs)
        samples, labelled = self._scan_folders(img, ann, *self.suffixes)
        if not samples and not self.problems:
            self.problems.append(f"no images found (layout {self._expected_layout()}). The dataset is empty: check "
                                 "the root, split, folder names and suffixes.")
        return samples, labelled
