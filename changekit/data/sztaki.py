"""SZTAKI AirChange (Benedek & Szirányi, 2009): 13 aerial RGB pairs of 952x640 at 1.5 m from two Hungarian sites,
read as distributed: ``<root>/{Szada,Tiszadob}/<n>/{im1,im2,gt}.bmp`` (extensions in either case: ``im2.BMP``).
``gt.bmp`` marks change in white (any non-black value).

Splits follow the protocol of Zhan et al. (2017), which Caye Daudt et al. (ICIP 2018) use for their FC-* results:
``test`` is the top-left 784x448 rectangle of ``Szada/1`` and of ``Tiszadob/3``; ``train`` is every other pair
plus what lies outside those rectangles (two strips of each test pair). Pairs are named ``Szada/1``; any
comma-separated list of pair names (``"Szada/7,Tiszadob/5"``) is a split too, and ``train`` minus a list is
written ``train-Szada/7,Tiszadob/5`` (changekit's recipe validates on the pairs it leaves out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from changekit.data.datasets import PairDataset, Sample
from changekit.data.io import read_label
from changekit.errors import DataError

__all__ = ["SztakiDataset", "TEST_PAIRS", "TEST_RECT"]

SITES = ("Szada", "Tiszadob")
#: the pairs and the rectangle (x, y, width, height) the literature tests on
TEST_PAIRS = ("Szada/1", "Tiszadob/3")
TEST_RECT = (0, 0, 784, 448)


def _find(folder: Path, stem: str) -> Path | None:
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.stem.lower() == stem and p.suffix.lower() == ".bmp":
            return p
    return None


class SztakiDataset(PairDataset):
    """SZTAKI AirChange pairs as samples; a sample may be a window of a pair (``Szada/1@test``: the test
    rectangle; ``Szada/1@right`` / ``@bottom``: the strips outside it)."""

    HEADERS_TELL = False  # test-pair samples are windows of their files: checks read them

    def __init__(self, root, split: str | None = "train", **kw):
        kw.setdefault("in_channels", 3)
        kw.setdefault("label_encoding", "0-255")
        kw.setdefault("ignore_value", None)
        self.windows: dict[str, tuple[int, int, int, int]] = {}
        super().__init__(root, split, **kw)

    def _pairs(self) -> list[str]:
        found = []
        for site in SITES:
            d = self.root / site
            if d.is_dir():
                found += [f"{site}/{p.name}" for p in sorted(d.iterdir(), key=lambda p: (len(p.name), p.name))
                          if p.is_dir()]
        return found

    def _expected_layout(self) -> str:
        return f"{self.root}/{{Szada,Tiszadob}}/<n>/{{im1,im2,gt}}.bmp"

    def _split_entries(self, pairs: list[str]) -> list[tuple[str, str | None]]:
        """(pair, window) entries of the split; window None = the whole pair."""
        split = str(self.split)
        if split == "test":
            return [(p, "test") for p in TEST_PAIRS]
        if split == "train" or split.startswith("train-"):
            leave = {s.strip() for s in split[len("train-"):].split(",")} if split.startswith("train-") else set()
            unknown = leave - set(pairs)
            if unknown:
                self.problems.append(f"split {split!r}: no pair {', '.join(sorted(unknown))} under {self.root}")
            out: list[tuple[str, str | None]] = []
            for p in pairs:
                if p in leave:
                    continue
                out += [(p, "right"), (p, "bottom")] if p in TEST_PAIRS else [(p, None)]
            return out
        names = [s.strip() for s in split.split(",") if s.strip()]
        for n in names:
            if n in TEST_PAIRS:
                self.problems.append(f"split {split!r}: {n} is a test pair; use split test (its rectangle) or train "
                                     "(what lies outside it)")
        return [(n, None) for n in names]

    def _scan(self) -> tuple[list[Sample], bool]:
        P = self.problems
        if not self.root.is_dir():
            P.append(f"root folder {self.root} does not exist. Set data.root to the SZTAKI_AirChange_Benchmark folder.")
            return [], False
        pairs = self._pairs()
        if not pairs:
            P.append(f"no pairs found; expected layout {self._expected_layout()}")
            return [], False
        x, y, w, h = TEST_RECT
        rects = {"test": (x, y, w, h), "right": (x + w, 0, None, None), "bottom": (0, y + h, w, None)}
        samples = []
        for pair, window in self._split_entries(pairs):
            d = self.root / pair
            if not d.is_dir():
                P.append(f"pair {pair!r}: folder {d} is missing ({self._expected_layout()})")
                continue
            files = {k: _find(d, k) for k in ("im1", "im2", "gt")}
            want = ("im1", "im2", "gt") if self.labels_mode is not False else ("im1", "im2")
            missing = [k for k in want if files[k] is None]
            if missing:
                P.append(f"{d}: no {', '.join(m + '.bmp' for m in missing)}")
                continue
            name = pair if window is None else f"{pair}@{window}"
            if window is not None:
                self.windows[name] = rects[window]
            samples.append(Sample(name, (files["im1"], files["im2"]),
                                  files["gt"] if self.labels_mode is not False else None))
        if not samples and not P:
            P.append(f"no pairs in split {self.split!r}")
        return samples, self.labels_mode is not False and bool(samples)

    def _window(self, name: str, a: np.ndarray) -> np.ndarray:
        if name not in self.windows:
            return a
        x, y, w, h = self.windows[name]
        return a[y: None if h is None else y + h, x: None if w is None else x + w]

    def load_arrays(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        p1, p2 = s.images
        t1 = self._window(s.name, self._read_image(p1))
        t2 = self._window(s.name, self._read_image(p2))
        if t1.shape != t2.shape:
            raise DataError(f"{p2}: size {t2.shape[1]}x{t2.shape[0]} differs from {p1} ({t1.shape[1]}x{t1.shape[0]})")
        out: dict[str, Any] = {"t1": np.ascontiguousarray(t1), "t2": np.ascontiguousarray(t2), "name": s.name}
        if self._has_labels and s.label is not None:
            lab = self._window(s.name, self.load_label(s.label))
            if lab.shape != t1.shape[:2]:
                raise DataError(f"{s.label}: label size {lab.shape[1]}x{lab.shape[0]} differs from the images")
            out["label"] = np.ascontiguousarray(lab)
        return out

    def _read_label_raw(self, path: Path) -> np.ndarray:
        # gt.bmp is drawn in white on black; some files are RGB, some grey: any non-black pixel is change
        raw = read_label(path, colour="max")
        return np.where(raw > 0, 255, 0).astype(np.uint8)

    def units(self, max_pairs: int = 8) -> dict[str, Any]:
        return {"dtype": "uint8", "range": [0.0, 255.0], "observed": [0.0, 255.0]} if self.samples else {}
