"""ISPRS Potsdam and Vaihingen read from the official tiles, as mmseg's converters would cut them.

The official downloads are large tiles (Potsdam: 38 of 6000 x 6000 px at 5 cm; Vaihingen: 33 of about
2000 x 2500 px at 9 cm) with colour-coded label tiles, in two variants: all pixels (``5_Labels_all``,
``gts_for_participants``) and *eroded* (``..._noBoundary``: a 3 px band along class boundaries is black and not
scored). mmseg's converters (``tools/dataset_converters/{potsdam,vaihingen}.py``) cut them into 512 x 512 PNGs;
:class:`IsprsTileDataset` gives the same crops straight from the tiles (windowed reads, nothing to convert):

* crops start every 512 px, the last one on each axis pulled back to end on the tile's edge (the converters
  pass a stride of 256 but place crops at multiples of the clip size, so crops do not overlap);
* names ``<i>_<j>_<x0>_<y0>_<x1>_<y1>`` (Potsdam) and ``area<n>_<x0>_<y0>_<x1>_<y1>`` (Vaihingen), as the PNGs;
* the train/val tile lists of the converters;
* labels: each class colour is its class (impervious surface white, building blue, low vegetation cyan, tree
  green, car yellow, clutter red, in the order of the ``potsdam`` preset); black (the eroded boundary) and any
  other colour are ignored, as the converters' ``0`` with ``reduce_zero_label``. The eroded variant is mmseg's
  (and the benchmark's) default; ``boundary="full"`` reads the labels with boundaries.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from changekit.data.datasets import ImageDataset, Sample
from changekit.data.io import image_shape, read_window, select_bands
from changekit.errors import ConfigError, DataError

__all__ = ["IsprsTileDataset", "SPLITS", "CLASS_COLOURS", "crop_starts", "encode_colours"]

#: label colours (RGB) of the six classes, in class order (the ``potsdam``/``vaihingen`` presets' palette)
CLASS_COLOURS = ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))

#: mmseg's converters' tile lists
SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "potsdam": {
        "train": ("2_10", "2_11", "2_12", "3_10", "3_11", "3_12", "4_10", "4_11", "4_12", "5_10", "5_11", "5_12",
                  "6_10", "6_11", "6_12", "6_7", "6_8", "6_9", "7_10", "7_11", "7_12", "7_7", "7_8", "7_9"),
        "val": ("5_15", "6_15", "6_13", "3_13", "4_14", "6_14", "5_14", "2_13", "4_15", "2_14", "5_13", "4_13",
                "3_14", "7_13"),
    },
    "vaihingen": {
        "train": ("area1", "area11", "area13", "area15", "area17", "area21", "area23", "area26", "area28", "area3",
                  "area30", "area32", "area34", "area37", "area5", "area7"),
        "val": ("area6", "area24", "area35", "area16", "area14", "area22", "area10", "area4", "area2", "area20",
                "area8", "area31", "area33", "area27", "area38", "area12", "area29"),
    },
}

# official file names: (tile id, kind) from a file name; kind is an image product or a label variant
_POTSDAM = re.compile(r"^top_potsdam_(\d+_\d+)_(RGB|IRRG|RGBIR|label|label_noBoundary)\.tiff?$", re.IGNORECASE)
_VAIHINGEN = re.compile(r"^top_mosaic_09cm_(area\d+)(_noBoundary)?\.tiff?$", re.IGNORECASE)
_DOWNLOADS = {
    "potsdam": "2_Ortho_RGB (or 3_Ortho_IRRG / 4_Ortho_RGBIR) and 5_Labels_all_noBoundary (or 5_Labels_all)",
    "vaihingen": "ISPRS_semantic_labeling_Vaihingen (top/) and ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded"
                 "_COMPLETE (or ..._ground_truth_COMPLETE / gts_for_participants)",
}


def crop_starts(length: int, size: int = 512) -> list[int]:
    """Crop origins along one axis: multiples of ``size``, the last pulled back to end on the edge (deduplicated)."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, size))
    return starts + [length - size]


def encode_colours(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) label colours -> (H, W) uint8: 1..6 for the class colours, 0 for anything else (black boundary)
    -- the values of mmseg's converted label PNGs."""
    rgb = rgb.astype(np.int32, copy=False)
    key = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    out = np.zeros(key.shape, np.uint8)
    for k, (r, g, b) in enumerate(CLASS_COLOURS):
        out[key == ((r << 16) | (g << 8) | b)] = k + 1
    return out


def _classify(site: str, path: Path) -> tuple[str, str] | None:
    """``(tile, kind)`` of an official file: kind ``image:<product>``, ``label:full`` or ``label:eroded``."""
    if site == "potsdam":
        m = _POTSDAM.match(path.name)
        if not m:
            return None
        kind = m.group(2).lower()
        if kind.startswith("label"):
            return m.group(1), "label:eroded" if kind.endswith("noboundary") else "label:full"
        return m.group(1), "image:" + m.group(2).upper()
    m = _VAIHINGEN.match(path.name)
    if not m:
        return None
    if m.group(2):
        return m.group(1), "label:eroded"
    # the full labels carry the image's own file name: told apart by their folder (gts_for_participants, ...)
    in_gt = any("gts" in part.lower() or "ground_truth" in part.lower() for part in path.parent.parts)
    return m.group(1), "label:full" if in_gt else "image:IRRG"


class IsprsTileDataset(ImageDataset):
    """ISPRS Potsdam / Vaihingen crops read from the official tiles anywhere under ``root`` (see module docstring).

    Args (besides :class:`~changekit.data.datasets.BaseDataset`'s):
        site: ``potsdam`` or ``vaihingen``.
        boundary: ``eroded`` (the ``noBoundary`` labels: mmseg's converters and the benchmark) or ``full``.
        product: Potsdam's image product, ``RGB`` (mmseg's), ``IRRG`` or ``RGBIR`` (4 bands); Vaihingen: IRRG.
        crop: crop size (512, as the converters).
        tiles: use only these tile ids (e.g. ``["2_10", "5_15"]``, ``["area1"]``): each split takes those of them that
            belong to it; default every tile of the split, all of which must be present.
    """

    def __init__(self, root, split="train", *, site: str = "potsdam", boundary: str = "eroded",
                 product: str | None = None, crop: int = 512, tiles: list[str] | None = None, **kw: Any) -> None:
        if site not in SPLITS:
            raise ConfigError(f"site={site!r}: use potsdam or vaihingen")
        if boundary not in ("eroded", "full"):
            raise ConfigError(f"boundary={boundary!r}: use eroded (the noBoundary labels, mmseg's) or full")
        self.site, self.boundary, self.crop = site, boundary, int(crop)
        self.product = (product or ("RGB" if site == "potsdam" else "IRRG")).upper()
        self.tiles = list(tiles) if tiles else None
        self.boxes: list[tuple[int, int, int, int]] = []
        super().__init__(root, split, **kw)

    def _expected_layout(self) -> str:
        return f"{self.root}/**/<official tiles of {_DOWNLOADS[self.site]}>, extracted"

    def _scan(self) -> tuple[list[Sample], bool]:
        P = self.problems
        labelled = self.labels_mode is not False
        if not self.root.is_dir():
            P.append(f"root folder {self.root} does not exist. Set data.root to the folder of the extracted downloads.")
            return [], labelled
        if self.split not in SPLITS[self.site]:
            P.append(f"split {self.split!r}: the {self.site} tiles have splits {', '.join(SPLITS[self.site])}")
            return [], labelled
        images, labels = self._tile_files()
        if not images:
            zips = sorted(p.name for p in self.root.glob("*.zip"))
            hint = f" (found {', '.join(zips)}: extract them first, e.g. `unzip -d {self.root} <file>.zip`)" if zips else ""
            P.append(f"no {self.site} {self.product} image tiles under {self.root}{hint}. Download and extract "
                     f"{_DOWNLOADS[self.site]}.")
            return [], labelled
        wanted = self._wanted_tiles()
        missing = [t for t in wanted if t not in images]
        if missing:
            P.append(f"{len(missing)} {self.split} tile(s) of {self.site} have no {self.product} image under {self.root}: "
                     f"{', '.join(missing)}. Add them, or name the tiles to use with `tiles:`.")
        if labelled:
            nolab = [t for t in wanted if t in images and t not in labels]
            if nolab:
                variant = "eroded (noBoundary)" if self.boundary == "eroded" else "full"
                P.append(f"{len(nolab)} tile(s) have no {variant} label tile under {self.root}: {', '.join(nolab)}. "
                         "Extract the label download" + (", or set boundary: full to use the labels with boundaries"
                                                          if self.boundary == "eroded" else "") + ".")
        samples: list[Sample] = []
        self.boxes = []
        for tile in sorted(t for t in wanted if t in images and (t in labels or not labelled)):
            try:
                h, w, _ = image_shape(images[tile])
            except DataError as e:
                P.append(str(e))
                continue
            for y0 in crop_starts(h, self.crop):
                for x0 in crop_starts(w, self.crop):
                    x1, y1 = min(x0 + self.crop, w), min(y0 + self.crop, h)
                    samples.append(Sample(f"{tile}_{x0}_{y0}_{x1}_{y1}", (images[tile],), labels.get(tile)))
                    self.boxes.append((x0, y0, x1 - x0, y1 - y0))
        return samples, labelled

    def _tile_files(self) -> tuple[dict[str, Path], dict[str, Path]]:
        """Tile id -> image file of the product, and -> label file of the boundary variant, under ``root``."""
        images: dict[str, Path] = {}
        labels: dict[str, Path] = {}
        want_label = f"label:{self.boundary}"
        for path in sorted(self.root.rglob("*")):
            if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
                continue
            found = _classify(self.site, path)
            if found is None:
                continue
            tile, kind = found
            if kind == f"image:{self.product}":
                images.setdefault(tile, path)
            elif kind == want_label:
                labels.setdefault(tile, path)
        return images, labels

    def _wanted_tiles(self) -> list[str]:
        """The split's tiles, or those of ``tiles`` that belong to it (the others to another split)."""
        split_tiles = SPLITS[self.site][self.split]
        if self.tiles is None:
            return list(split_tiles)
        known = {t for ts in SPLITS[self.site].values() for t in ts}
        unknown = [t for t in self.tiles if t not in known]
        if unknown:
            self.problems.append(f"tiles {unknown} are not {self.site} tiles (train: "
                                 f"{', '.join(SPLITS[self.site]['train'])}; val: {', '.join(SPLITS[self.site]['val'])})")
            return []
        wanted = [t for t in self.tiles if t in split_tiles]
        if not wanted:
            self.problems.append(f"none of tiles {self.tiles} is in the {self.split} split of {self.site}; add some of "
                                 f"{', '.join(split_tiles)}")
        return wanted

    def _window(self, path: Path, i: int) -> np.ndarray:
        return read_window(path, *self.boxes[i])

    def load_arrays(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        path = s.images[0]
        image = self._check_channels(select_bands(self._window(path, i), self.bands, path), path)
        out: dict[str, Any] = {"image": image, "name": s.name}
        if self._has_labels and s.label is not None:
            out["label"] = self.decode(self.raw_label(i), s, i)
        return out

    def raw_label(self, i: int) -> np.ndarray:
        """The crop's label as mmseg's converted PNG stores it: 1..6 the classes, 0 boundary / other colours."""
        s = self.samples[i]
        rgb = self._window(s.label, i)
        if rgb.shape[2] < 3:
            raise DataError(f"{s.label}: {rgb.shape[2]} band(s); ISPRS label tiles are colour-coded RGB "
                            "(is this the right file?)")
        return encode_colours(rgb[:, :, :3])

    def decode(self, raw: np.ndarray, s: Sample, i: int) -> np.ndarray:
        """Class indices with the ignore index where the converters store 0. A crop that is mostly not class colours
        is refused: the boundary band of the eroded labels is a few percent, so it is an image or a wrong file."""
        black_or_other = raw == 0
        if black_or_other.mean() > 0.5:
            x, y, w, h = self.boxes[i]
            raise DataError(f"{s.label}: {black_or_other.mean():.0%} of the crop at x={x}, y={y} ({w}x{h}) is not a "
                            "class colour; ISPRS labels are colour-coded (is this an image, or another file?)")
        out = raw.astype(np.int64) - 1
        out[black_or_other] = self.ignore_index
        return out
