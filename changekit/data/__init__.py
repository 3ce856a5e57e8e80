"""Data: bi-temporal and single-date datasets and presets, paired transforms, synthetic scenes, raster I/O.

Public API::

    from changekit.data import ChangeDataset, SegmentationDataset, BandonDataset, build_dataset, get_preset
    from changekit.data import build_transforms, make_pair, write_dataset, write_geotiff_pair
    from changekit.data import read_image, read_label
"""

from changekit.data.bandon import BandonDataset
from changekit.data.datasets import (
    BaseDataset,
    ImageDataset,
    PairDataset,
    Sample,
    ValidationReport,
    decode_label,
)
from changekit.data.folders import ChangeDataset, SegmentationDataset
from changekit.data.io import image_shape, read_image, read_label, write_png, write_tiff
from changekit.data.presets import (
    PRESETS,
    DatasetPreset,
    build_dataset,
    get_preset,
    list_presets,
)
from changekit.data.synthetic import make_pair, write_dataset, write_geotiff_pair
from changekit.data.transforms import STATS, build_transforms, resolve_stats

__all__ = [
    "BaseDataset", "PairDataset", "ImageDataset", "ChangeDataset", "SegmentationDataset", "BandonDataset", "Sample",
    "ValidationReport", "decode_label",
    "read_image", "read_label", "image_shape", "write_png", "write_tiff",
    "PRESETS", "DatasetPreset", "get_preset", "list_presets", "build_dataset",
    "build_transforms", "resolve_stats", "STATS",
    "make_pair", "write_dataset", "write_geotiff_pair",
]
