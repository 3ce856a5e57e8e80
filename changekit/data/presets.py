"""Dataset presets: the official layouts, suffixes, label encodings, splits and statistics
of the change-detection benchmarks (open-cd conventions, ``opencd/datasets/*.py``).

A config picks one by name::

    data:
      dataset: levir-cd        # a preset name (or "folder" for your own layout)
      root: data/LEVIR-CD
      # any ChangeDataset argument overrides the preset: dirs, suffixes, list_file, label_encoding,
      # bands, in_channels, mean, std, ...

``build_dataset(preset, root, split, **overrides)`` returns the dataset (the one builder: ``ChangeDataModule``
and the dataset tools use it).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from changekit.data.bandon import BandonDataset
from changekit.data.datasets import BaseDataset, accepted_args
from changekit.data.folders import ChangeDataset, SegmentationDataset
from changekit.data.isprs import CLASS_COLOURS, IsprsTileDataset
from changekit.data.loveda import LoveDADataset
from changekit.data.oscd import OscdDataset
from changekit.data.synthetic import LANDCOVER_CLASSES, LANDCOVER_PALETTE
from changekit.data.sztaki import SztakiDataset
from changekit.errors import ConfigError

__all__ = ["DatasetPreset", "PRESETS", "get_preset", "list_presets", "build_dataset", "class_legend"]


@dataclass(frozen=True)
class DatasetPreset:
    name: str
    description: str
    dirs: tuple[str, str, str] = ("A", "B", "label")
    suffixes: Any = ".png"  # one suffix, or (date1, date2, label); each a str, list of alternatives, or None
    split_dir: str | None = "{split}"
    list_file: str | None = None
    label_encoding: str = "0-255"
    ignore_value: int | None = None
    num_classes: int = 2
    in_channels: int | None = 3
    splits: tuple[str, ...] = ("train", "val", "test")
    test_split: str = "test"  # what `test` evaluates unless data.test_split says otherwise
    mean: Any = "imagenet"
    std: Any = None
    image_size: tuple[int, int] | None = None  # native tile size (informative)
    crop_size: int | None = 256  # training crop of the reference configs
    dataset_class: type[BaseDataset] = ChangeDataset
    layout: str = ""  # human-readable layout (docs, check-dataset)
    extra: dict = field(default_factory=dict)  # dataset_class-specific keyword arguments
    task: str = "change"  # "segmentation" for single-date presets (one image, a class map)
    class_names: tuple[str, ...] = ()  # multi-class presets: label index -> name (tables, legends)
    palette: tuple[tuple[int, int, int], ...] = ()  # and -> RGB colour (the datasets' own colour codes)

    def dataset_kwargs(self) -> dict[str, Any]:
        """The preset's arguments of its dataset class: the folder layout (``dirs``, ``suffixes``, ``split_dir``,
        ``list_file``) only where the class reads one (an official layout's class knows its own names)."""
        layout = dict(dirs=self.dirs, suffixes=self.suffixes, split_dir=self.split_dir, list_file=self.list_file)
        accepted = accepted_args(self.dataset_class)
        kw = {k: v for k, v in layout.items() if k in accepted}
        kw.update(label_encoding=self.label_encoding, ignore_value=self.ignore_value,
                  num_classes=self.num_classes, in_channels=self.in_channels, mean=self.mean, std=self.std)
        kw.update(self.extra)
        return kw

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_ISPRS_CLASSES = ("impervious_surface", "building", "low_vegetation", "tree", "car", "clutter")
_ISPRS_PALETTE = CLASS_COLOURS  # the label files' own colour code
_LOVEDA_CLASSES = ("background", "building", "road", "water", "barren", "forest", "agricultural")
_LOVEDA_PALETTE = ((255, 255, 255), (255, 0, 0), (255, 255, 0), (0, 0, 255), (159, 129, 183), (0, 255, 0),
                   (255, 195, 128))

def _mmseg_segmentation(name: str, description: str, **fields: Any) -> DatasetPreset:
    """A single-date segmentation preset in mmseg's converted layout: ``{img_dir,ann_dir}/<split>/<tile>.png``,
    labels stored with 0 = ignored (``reduce-zero``), evaluated on ``val``, 512 crops."""
    fields.setdefault("dataset_class", SegmentationDataset)
    fields.setdefault("crop_size", 512)
    return DatasetPreset(name, description, dirs=("img_dir", "ann_dir"), split_dir=None, label_encoding="reduce-zero",
                         ignore_value=255, test_split="val", task="segmentation", **fields)


PRESETS: dict[str, DatasetPreset] = {
    p.name: p
    for p in [
        DatasetPreset(
            "levir-cd", "LEVIR-CD (Chen & Shi 2020): 637 pairs of 1024x1024 Google Earth RGB, 0.5 m; 445/64/128.",
            image_size=(1024, 1024), crop_size=512,
            layout="{train,val,test}/{A,B,label}/<name>.png; labels 0/255"),
        DatasetPreset(
            "levir-cd-plus", "LEVIR-CD+: 985 pairs of 1024x1024 RGB; train/test only (637/348).",
            splits=("train", "test"), image_size=(1024, 1024), crop_size=512,
            layout="{train,test}/{A,B,label}/<name>.png; labels 0/255"),
        DatasetPreset(
            "s2looking", "S2Looking (Shen et al. 2021): 5000 side-looking satellite pairs 1024x1024; 3500/1000/500.",
            dirs=("Image1", "Image2", "label"), image_size=(1024, 1024), crop_size=512,
            layout="{train,val,test}/{Image1,Image2,label}/<name>.png; labels 0/255"),
        DatasetPreset(
            "whu-cd", "WHU-CD, open-cd's 256x256 tiles: one folder of tiles, splits from list files.",
            split_dir=None, list_file="list/{split}.txt", suffixes=".png",
            image_size=(256, 256), crop_size=256, extra={},
            layout="{A,B,label}/<tile>.png + list/{train,val,test}.txt (names with extension)"),
        DatasetPreset(
            "whu-cd-whole", "WHU-CD whole images (one large GeoTIFF pair per split; cut with `changekit tile`).",
            suffixes=(".tif", ".tif", ".tif"), splits=("train", "test"), crop_size=512,
            layout="{train,test}/{A,B,label}/<name>.tif; labels 0/255"),
        DatasetPreset(
            "cdd", "CDD (Lebedev et al. 2018; open-cd calls it SVCD): 256x256 seasonal-change JPGs; 10000/3000/3000.",
            dirs=("A", "B", "OUT"), suffixes=".jpg", image_size=(256, 256), crop_size=256,
            layout="{train,val,test}/{A,B,OUT}/<name>.jpg; labels 0/255 JPG (thresholded at 128)"),
        DatasetPreset(
            "sysu-cd", "SYSU-CD (Shi et al. 2021): 20000 pairs 256x256, 0.5 m; 12000/4000/4000.",
            dirs=("time1", "time2", "label"), image_size=(256, 256), crop_size=256,
            layout="{train,val,test}/{time1,time2,label}/<name>.png; labels 0/255"),
        DatasetPreset(
            "dsifn", "DSIFN-CD (Zhang et al. 2020): 512x512 tiles of 6 Chinese cities; masks already 0/1.",
            dirs=("t1", "t2", "mask"), suffixes=(".jpg", ".jpg", [".png", ".tif"]), label_encoding="0-1",
            ignore_value=None, image_size=(512, 512), crop_size=256,
            layout="{train,val,test}/{t1,t2,mask}/<name>.jpg; masks 0/1 .png (test: .tif)"),
        DatasetPreset(
            "clcd", "CLCD (Liu et al. 2022): cropland change, 600 pairs 512x512, Gaofen-2; 360/120/120.",
            dirs=("time1", "time2", "label"), image_size=(512, 512), crop_size=512,
            layout="{train,val,test}/{time1,time2,label}/<name>.png; labels 0/255"),
        DatasetPreset(
            "bandon", "BANDON (Pang et al. 2023): off-nadir building change, cities x dates, with building labels.",
            dirs=("imgs", "imgs", "labels"), suffixes=(".jpg", ".jpg", ".png"), label_encoding="0-1",
            ignore_value=255, crop_size=512, dataset_class=BandonDataset,
            # BAN tests on the in-domain test/test; test/test_ood (other cities) is the out-of-domain split
            splits=("train", "val", "test/test", "test/test_ood"), test_split="test/test",
            layout="{split}/imgs/<city>/<t>/<name>.jpg; {split}/labels_unch0ch1ig255/<city>/<tA>VS<tB>/<name>.png "
                   "(0/1/255-ignore) or {split}/labels/... (0/255); building_labels/<city>/<t>/<name>.png (0 bg, "
                   "1 roof, 2 facade); splits train, val, test/test (in-domain), test/test_ood (out-of-domain)"),
        # single-date semantic segmentation, mmseg's converted layouts (tools/dataset_converters/{potsdam,vaihingen,
        # loveda}.py): 0 in the stored labels is ignored (ISPRS eroded boundaries, LoveDA no-data)
        _mmseg_segmentation(
            "potsdam", "ISPRS Potsdam (mmseg's 512x512 cut of the 38 tiles, RGB, 5 cm): 6 classes; 3456/2016 tiles.",
            num_classes=6, splits=("train", "val"), image_size=(512, 512), class_names=_ISPRS_CLASSES,
            palette=_ISPRS_PALETTE,
            layout="{img_dir,ann_dir}/{train,val}/<tile>.png; labels 0 (boundary, ignored), 1..6 = impervious surface, "
                   "building, low vegetation, tree, car, clutter"),
        _mmseg_segmentation(
            "vaihingen", "ISPRS Vaihingen (mmseg's 512x512 cut of the 33 tiles, IRRG, 9 cm): 6 classes; 344/398 tiles.",
            num_classes=6, splits=("train", "val"), image_size=(512, 512), class_names=_ISPRS_CLASSES,
            palette=_ISPRS_PALETTE, layout="{img_dir,ann_dir}/{train,val}/<tile>.png (IRRG); labels as potsdam"),
        # the same two sites read from the official tiles (changekit.data.isprs): mmseg's crops, names, splits and
        # label conventions without running its converters
        _mmseg_segmentation(
            "potsdam-tiles", "ISPRS Potsdam from the official 6000x6000 tiles (extracted zips), cut on the fly as "
            "mmseg's converter cuts them: 3456/2016 crops of 512x512.",
            num_classes=6, splits=("train", "val"), image_size=(512, 512), class_names=_ISPRS_CLASSES,
            palette=_ISPRS_PALETTE, dataset_class=IsprsTileDataset, extra={"site": "potsdam"},
            layout="<root>/**/top_potsdam_<i>_<j>_RGB.tif + top_potsdam_<i>_<j>_label_noBoundary.tif (colour-coded; "
                   "boundary: full reads *_label.tif; product: IRRG/RGBIR other image tiles)"),
        _mmseg_segmentation(
            "vaihingen-tiles", "ISPRS Vaihingen from the official tiles (extracted zips), cut on the fly as mmseg's "
            "converter cuts them: 344/398 crops of 512x512.",
            num_classes=6, splits=("train", "val"), image_size=(512, 512), class_names=_ISPRS_CLASSES,
            palette=_ISPRS_PALETTE, dataset_class=IsprsTileDataset, extra={"site": "vaihingen"},
            layout="<root>/**/top/top_mosaic_09cm_area<n>.tif + top_mosaic_09cm_area<n>_noBoundary.tif (colour-coded; "
                   "boundary: full reads gts_for_participants/top_mosaic_09cm_area<n>.tif)"),
        _mmseg_segmentation(
            "loveda", "LoveDA (Wang et al. 2021): 5987 urban/rural 1024x1024 tiles, 0.3 m; 7 classes; 2522/1669/1796.",
            num_classes=7, splits=("train", "val", "test"), image_size=(1024, 1024), class_names=_LOVEDA_CLASSES,
            palette=_LOVEDA_PALETTE,
            layout="{img_dir,ann_dir}/{train,val,test}/<tile>.png (urban and rural together; test has no labels); "
                   "labels 0 (no-data, ignored), 1..7 = background, building, road, water, barren, forest, agricultural"),
        _mmseg_segmentation(
            "synthetic-landcover", "changekit's synthetic single-date land cover (`changekit demo --task "
            "segmentation` writes it): tiles of ground, trees, roads and buildings.",
            num_classes=4, splits=("train", "val"), crop_size=64, class_names=LANDCOVER_CLASSES,
            palette=LANDCOVER_PALETTE, layout="{img_dir,ann_dir}/{train,val}/<name>.png; labels class + 1 (0 ignored)"),
        _mmseg_segmentation(
            "loveda-official", "LoveDA from the official download (extracted Train/, Val/, Test/ with Urban/ and "
            "Rural/): no converter; area: urban / rural keeps the two domains apart.",
            num_classes=7, splits=("train", "val", "test"), image_size=(1024, 1024), class_names=_LOVEDA_CLASSES,
            palette=_LOVEDA_PALETTE, dataset_class=LoveDADataset,
            layout="{Train,Val,Test}/{Urban,Rural}/{images_png,masks_png}/<id>.png (Test: no masks); labels as loveda"),
        DatasetPreset(
            "oscd", "OSCD (Caye Daudt et al. 2018): 24 Sentinel-2 L1C city pairs, 13 bands at 10/20/60 m stacked on the "
            "10 m grid; 14 labelled (official train list), 10 official test cities (labels not public).",
            dirs=("imgs_1", "imgs_2", "cm"), suffixes=".tif", split_dir=None, label_encoding="index",
            in_channels=None, splits=("train", "test", "heldout"), test_split="heldout", mean=None, crop_size=96,
            dataset_class=OscdDataset,
            layout="<root>/Onera Satellite Change Detection dataset - Images/<city>/imgs_{1,2}/*_B01..B12,B8A.tif + "
                   "train.txt/test.txt, labels '... - Train Labels/<city>/cm/<city>-cm.tif' (1 no change, 2 change); "
                   "or <root>/<city>/{imgs_1,imgs_2,cm}; band_names: all (13) or rgbn (B02 B03 B04 B08); split: "
                   "train, test, heldout (paris, bordeaux, pisa) or 'city1,city2'"),
        DatasetPreset(
            "sztaki", "SZTAKI AirChange (Benedek & Sziranyi 2009): 13 aerial RGB pairs of 952x640, 1.5 m (Szada 7, "
            "Tiszadob 6); test = the top-left 784x448 of Szada/1 and Tiszadob/3 (Zhan et al. 2017; Daudt et al. 2018).",
            dirs=("im1", "im2", "gt"), suffixes=".bmp", split_dir=None, label_encoding="0-255", in_channels=3,
            splits=("train", "test"), crop_size=128, dataset_class=SztakiDataset, image_size=(640, 952),
            layout="<root>/{Szada,Tiszadob}/<n>/{im1,im2,gt}.bmp (any case); gt white = change; split: train, test, "
                   "'Szada/2,Tiszadob/1' or train-<pairs> (train less those pairs)"),
        DatasetPreset(
            "folder", "Your own data: {split}/{A,B,label}/<name>.<any image ext> (any band count); "
            "override dirs, suffixes, split_dir, list_file, label_encoding, bands, mean/std.",
            suffixes=None, label_encoding="binary", ignore_value=255, in_channels=None, crop_size=None,
            layout="{split}/{A,B,label}/<name>.<png|jpg|tif>; labels 0/255 or 0/1 (auto)"),
    ]
}

_ALIASES = {"levir": "levir-cd", "levircd": "levir-cd", "levir-cd+": "levir-cd-plus", "levircd-plus": "levir-cd-plus",
            "s2l": "s2looking", "whu": "whu-cd", "whu-cd-256": "whu-cd", "svcd": "cdd", "sysu": "sysu-cd",
            "custom": "folder", "isprs-potsdam": "potsdam", "isprs-vaihingen": "vaihingen"}


def list_presets() -> list[str]:
    return list(PRESETS)


def get_preset(name: str) -> DatasetPreset:
    key = _ALIASES.get(name.lower(), name.lower()) if isinstance(name, str) else name
    if key not in PRESETS:
        raise ConfigError(f"unknown dataset preset {name!r}; known: {', '.join(PRESETS)} "
                          "(use 'folder' with dirs/suffixes for your own layout).")
    return PRESETS[key]


def build_dataset(preset: str | DatasetPreset, root: str | os.PathLike, split: str | None = "train",
                  **overrides: Any):
    """A dataset of ``preset`` at ``root`` for ``split``; keyword overrides (any ChangeDataset argument)
    win over the preset's values (e.g. ``transforms=``, ``labels=False``, ``bands=[3, 2, 1]``)."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    kw = p.dataset_kwargs()
    kw.update(overrides)
    unknown = sorted(set(overrides) - accepted_args(p.dataset_class))
    if unknown:
        raise ConfigError(f"dataset {p.name}: {', '.join(unknown)} do(es) not apply to this preset "
                          f"({p.dataset_class.__name__}); remove it from data.dataset_args / the command line")
    return p.dataset_class(root, split, preset=p.name, **kw)


def preset_with(name: str, **changes: Any) -> DatasetPreset:
    """A copy of a preset with some fields changed (e.g. ``mean='clip'`` for BAN)."""
    return replace(get_preset(name), **changes)


def class_legend(info: dict, num_classes: int) -> tuple[list[str], list[list[int]]]:
    """Class names and RGB colours of a segmentation model from what it records (``info``: ``class_names``, ``palette``,
    ``dataset``): recorded ones, else its dataset preset's (when the class count matches), else generic."""
    names, palette = info.get("class_names"), info.get("palette")
    if not names and info.get("dataset"):
        preset = PRESETS.get(str(info["dataset"]))
        if preset is not None and len(preset.class_names) == num_classes:
            names, palette = list(preset.class_names), [list(c) for c in preset.palette]
    if not names or len(names) != num_classes:
        names = [f"class {i}" for i in range(num_classes)]
    if not palette or len(palette) != num_classes:
        rng = np.random.default_rng(0)  # distinct, fixed colours for classes no dataset named
        palette = [[int(v) for v in rng.integers(32, 256, 3)] for _ in range(num_classes)]
    return list(names), [[int(v) for v in c] for c in palette]
