"""LoveDA read from the official download, as extracted: ``<root>/{Train,Val,Test}/{Urban,Rural}/{images_png,
masks_png}/<id>.png`` (Test without masks).

mmseg's converter (``tools/dataset_converters/loveda.py``) moves both areas of a split into one
``img_dir/<split>`` / ``ann_dir/<split>`` (the ``loveda`` preset); :class:`LoveDADataset` reads the download in place
and can keep the areas apart (``area: urban`` or ``rural``), as LoveDA's papers also report them. Names are the
file stems, as after conversion (the two areas' ids do not overlap; a clash is an error). Labels are stored as
LoveDA stores them: 0 no-data (ignored), 1..7 background, building, road, water, barren, forest, agricultural
(``reduce-zero``).
"""

from __future__ import annotations

from typing import Any

from changekit.data.datasets import ImageDataset, Sample, _as_suffixes, _fmt_names
from changekit.errors import ConfigError

__all__ = ["LoveDADataset", "AREAS"]

AREAS = {"urban": ("Urban",), "rural": ("Rural",), "both": ("Urban", "Rural")}


class LoveDADataset(ImageDataset):
    """LoveDA from the official layout (module docstring). ``area``: ``both`` (default, as mmseg), ``urban``, ``rural``."""

    def __init__(self, root, split="train", *, area: str = "both", suffixes: str = ".png", **kw: Any) -> None:
        if area not in AREAS:
            raise ConfigError(f"area={area!r}: use both, urban or rural")
        self.area = area
        self.suffix = _as_suffixes(suffixes)
        super().__init__(root, split, **kw)

    def _expected_layout(self) -> str:
        return f"{self.root}/{{Train,Val,Test}}/{{Urban,Rural}}/{{images_png,masks_png}}/<id>.png"

    def _scan(self) -> tuple[list[Sample], bool]:
        if not self.root.is_dir():
            self.problems.append(f"root folder {self.root} does not exist. Set data.root to the folder holding the "
                                 "extracted Train/, Val/ and Test/.")
            return [], False
        split = str(self.split).capitalize()  # train -> Train, as the download names its folders
        samples: list[Sample] = []
        where: dict[str, str] = {}
        labelled = []
        for loc in AREAS[self.area]:
            base = self.root / split / loc
            part, area_labelled = self._scan_folders(base / "images_png", base / "masks_png", self.suffix, self.suffix)
            labelled.append(area_labelled)
            clash = [s.name for s in part if s.name in where]
            if clash:
                self.problems.append(f"{len(clash)} image id(s) occur in both {split}/{where[clash[0]]} and "
                                     f"{split}/{loc}: {_fmt_names(clash)}; the areas must not share ids")
            where.update({s.name: loc for s in part})
            samples += part
        if not samples and not self.problems:
            self.problems.append(f"no images found (layout {self._expected_layout()}). The dataset is empty: check the "
                                 "root and the split.")
        return sorted(samples, key=lambda s: s.name), all(labelled)
