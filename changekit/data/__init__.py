"""Bi-temporal data: datasets and presets, paired transforms, synthetic scenes, raster I/O.

Public API::

    from changekit.data import ChangeDataset, BandonDataset, build_dataset, get_preset
    from changekit.data import build_transforms, make_pair, write_dataset, write_geotiff_pair
    from changekit.data import read_image, read_label
"""

from changekit.data.datasets import BandonDataset, ChangeDataset, Sample, ValidationReport, decode_label
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
    "ChangeDataset", "BandonDataset", "Sample", "ValidationReport", "decode_label",
    "read_image", "read_label", "image_shape", "write_png", "write_tiff",
    "PRESETS", "DatasetPreset", "get_preset", "list_presets", "build_dataset",
    "build_transforms", "resolve_stats", "STATS",
    "make_pair", "write_dataset", "write_geotiff_pair",
]
