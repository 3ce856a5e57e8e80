"""BANDON (Pang et al., 2023): off-nadir building change, cities x dates, with building (semantic) labels."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from changekit.data.datasets import PairDataset, Sample, _as_suffixes, _list_dir, _resolve, decode_label
from changekit.data.io import read_label
from changekit.errors import ConfigError, DataError

__all__ = ["BandonDataset"]


class BandonDataset(PairDataset):
    """BANDON (Pang et al., 2023) as distributed:

    ``{split}/imgs/<city>/<t>/<name>.jpg``; change labels ``{split}/labels_unch0ch1ig255/<city>/<tA>VS<tB>/
    <name>.png`` (train: 0 unchanged, 1 changed, 255 ignore) or ``{split}/labels/<city>/<tA>VS<tB>/<name>.png``
    (val/test: 0/255); building (semantic) labels ``{split}/building_labels/<city>/<t>/<name>.png``
    (0 background, 1 roof, 2 facade). Names are ``<city>/<tA>VS<tB>/<name>``. With ``semantic=True`` the item
    also carries ``label_sem1``/``label_sem2`` (int64 HW). Optional ``list_file`` lines as written by open-cd's
    ``generate_bandon_txt.py`` (``city/t1/name city/t2/name city/t1VSt2/name ...``) restrict the names.
    ``suffixes``: (image, label), or (date 1, date 2, label) as the folder layout's. The label encoding follows the
    label folder found (``0-1`` with 255 ignored, or ``0-255``).
    """

    LABEL_DIRS = (("labels_unch0ch1ig255", "0-1"), ("labels", "0-255"))

    def __init__(self, root, split="train", *, semantic: bool = False, semantic_classes: int = 3,
                 suffixes: Sequence[str] = (".jpg", ".png"), list_file: str | os.PathLike | None = None, **kw):
        self.semantic = semantic
        self.semantic_classes = semantic_classes
        if len(suffixes) not in (2, 3):
            raise ConfigError(f"suffixes={suffixes!r}: give two (image, label) or three (date 1, date 2, label)")
        self.suffixes = (_as_suffixes(suffixes[0]), _as_suffixes(suffixes[-1]))
        self.list_file = list_file
        self.base_dir = Path(root) / split if split is not None else Path(root)
        self.label_root = next((self.base_dir / d for d, _ in self.LABEL_DIRS if (self.base_dir / d).is_dir()), None)
        if self.label_root is not None:  # the folder found says how its labels are stored
            kw["label_encoding"] = dict(self.LABEL_DIRS)[self.label_root.name]
            kw["ignore_value"] = 255 if kw["label_encoding"] == "0-1" else None
        super().__init__(root, split, **kw)

    def _expected_layout(self) -> str:
        return f"{self.root}/<split>/imgs/<city>/<t>/<name>.jpg"

    def _scan(self) -> tuple[list[Sample], bool]:
        P = self.problems
        base, label_root = self.base_dir, self.label_root
        if not base.is_dir():
            P.append(f"split folder {base} is missing. Expected BANDON layout {self.root}/<split>/imgs/<city>/<t>/"
                     "<name>.jpg with labels_unch0ch1ig255/ (train) or labels/ (val/test).")
            return [], False
        imgs = base / "imgs"
        if not imgs.is_dir():
            P.append(f"image folder {imgs} is missing (BANDON keeps images in <split>/imgs/<city>/<t>/).")
            return [], False
        if self.labels_mode is True and label_root is None:
            P.append(f"no change-label folder under {base} (labels_unch0ch1ig255/ or labels/). Add it or set labels: false.")
            return [], False
        labelled = label_root is not None and self.labels_mode is not False
        img_sfx, lab_sfx = self.suffixes
        wanted = None
        if self.list_file is not None:
            lf = Path(str(self.list_file).format(split=self.split))
            lf = lf if lf.is_absolute() else self.root / lf
            if not lf.is_file():
                P.append(f"name list {lf} is missing.")
                return [], labelled
            wanted = {ln.split()[2] if len(ln.split()) >= 3 else ln.strip() for ln in lf.read_text().splitlines() if ln.strip()}
        samples: list[Sample] = []
        if labelled:
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
                        samples.append(Sample(name, (p1, p2), lp, extra))
        else:
            # prediction: consecutive dates of each city
            for city in sorted(p.name for p in imgs.iterdir() if p.is_dir()):
                times = sorted(p.name for p in (imgs / city).iterdir() if p.is_dir())
                for ta, tb in zip(times, times[1:]):
                    f1, f2 = _list_dir(imgs / city / ta, img_sfx), _list_dir(imgs / city / tb, img_sfx)
                    for stem in sorted(set(f1) & set(f2)):
                        samples.append(Sample(f"{city}/{ta}VS{tb}/{stem}", (f1[stem], f2[stem])))
        if not samples and not P:
            P.append(f"no BANDON samples found under {base}. The dataset is empty: check the root and split.")
        return samples, labelled

    def load_extra(self, key: str, path: Path, hw: tuple[int, int]) -> np.ndarray:
        lab = decode_label(read_label(path), "index", ignore_value=255, ignore_index=self.ignore_index,
                           num_classes=self.semantic_classes, path=path)
        if lab.shape != tuple(hw):
            raise DataError(f"{path}: building label size {lab.shape[::-1]} differs from the images {hw[::-1]}.")
        return lab
