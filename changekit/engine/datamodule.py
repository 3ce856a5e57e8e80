"""``ChangeDataModule``: datasets, transforms and loaders for training, evaluation and prediction."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, default_collate

from changekit.errors import ConfigError

__all__ = ["ChangeDataModule", "eval_sampler"]


def collate_pairs(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Default collation, except per-image lists (CLIPFormer class names), which stay one list per sample."""
    lists = {k: [it.pop(k) for it in items] for k in ("classes_a", "classes_b") if k in items[0]}
    return {**default_collate(items), **lists}


def eval_sampler(ds: Dataset, trainer: pl.Trainer | None):
    """Under DDP: a sampler that splits the set without padding (no sample is seen twice, so the
    confusion counts summed over processes equal those of one process); None otherwise."""
    if trainer is None or trainer.world_size <= 1:
        return None
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    if len(ds) < trainer.world_size:
        raise ConfigError(f"the evaluation set has {len(ds)} sample(s), fewer than the {trainer.world_size} processes")
    return UnrepeatedDistributedSampler(ds, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False)


class ChangeDataModule(pl.LightningDataModule):
    """Data for ``changekit fit/validate/test/predict``.

    Args:
        dataset: preset name (``levir-cd``, ``s2looking``, ``whu-cd``, ... see ``changekit.data.presets``) or
            ``folder`` for your own ``{split}/{A,B,label}`` layout.
        root: dataset folder.
        dirs, suffixes, split_dir, list_file, label_encoding: override the preset's layout.
        dataset_args: any other :class:`~changekit.data.ChangeDataset` argument (``ignore_value``, ...).
        bands: 0-based band indices to keep from every image (e.g. ``[3, 2, 1]``).
        in_channels: expected bands per date (default: the preset's, or ``len(bands)``).
        num_classes, ignore_index: label classes and the ignore value of the returned labels.
        batch_size: training batch per process; eval_batch_size: validation/test/predict batch (1 as open-cd,
            because images of a folder may differ in size).
        num_workers: loader worker processes.
        crop_size: training crop (int or [h, w]; default: the preset's); cat_max_ratio: crop re-draws until
            no class exceeds this share (open-cd 0.75).
        augment: training augmentation overrides (``rotate``, ``hflip``, ``vflip``, ``photometric``, ``exchange``).
        mean, std: normalisation statistics: a name (``imagenet``, ``clip``) or per-band lists (stored units).
        size_divisor: pad evaluation images (labels with the ignore value) to a multiple of this (32).
        train_split, val_split, test_split: split names (``test_split`` default: the preset's, ``test`` except
            BANDON's in-domain ``test/test``; ``test/test_ood`` is its out-of-domain split); predict_root: a folder
            of ``A``/``B`` (+ optional ``label``) pairs to predict (default: the test split of ``root``).
        validate_data: before any loop (fit, validate, test, predict), check every file's size and band count
            (``headers``), read every pixel (``full``) or skip (``off``).
        units: the stored units of the training images (``{dtype, range}``), measured at ``fit`` and recorded
            in the checkpoint; evaluation data in other units are refused (see ``check_units``).
        check_units: compare evaluation data with ``units`` (default true).
        input_range: ``[MIN, MAX]``: evaluation images store values MIN..MAX where the training images stored
            ``units.range`` (e.g. ``[0, 4095]`` for 12-bit data against an 8-bit model): rescaled linearly.
        train_repeat: draw each training sample this many times per epoch (a few large scenes, such as OSCD's
            cities, then give an epoch of many random crops).
    """

    def __init__(
        self,
        dataset: str = "folder",
        root: str | None = None,
        dirs: list[str] | None = None,
        suffixes: Any = None,
        split_dir: str | None = None,
        list_file: str | None = None,
        label_encoding: str | None = None,
        dataset_args: dict[str, Any] | None = None,
        bands: list[int] | None = None,
        in_channels: int | None = None,
        num_classes: int | None = None,
        ignore_index: int = 255,
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        crop_size: int | list[int] | None = None,
        cat_max_ratio: float = 0.75,
        augment: dict[str, Any] | None = None,
        mean: str | list[float] | None = None,
        std: str | list[float] | None = None,
        size_divisor: int | None = 32,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str | None = None,
        predict_root: str | None = None,
        predict_split: str | None = None,
        validate_data: str = "headers",
        units: dict[str, Any] | None = None,
        check_units: bool = True,
        input_range: list[float] | None = None,
        train_repeat: int = 1,
    ) -> None:
        super().__init__()
        from changekit.data.presets import get_preset
        from changekit.data.transforms import resolve_stats

        self.preset = get_preset(dataset)
        if validate_data not in ("headers", "full", "off"):
            raise ConfigError(f"data.validate_data must be headers, full or off, got {validate_data!r}")
        p = self.preset
        test_split = p.test_split if test_split is None else test_split  # BANDON: test/test (test/test_ood: OOD)
        # the preset's class count when not given (2 for change sets, the classes of a land-cover set); resolved
        # before save_hyperparameters so that it agrees with the model's num_classes when Lightning merges both
        num_classes = p.num_classes if num_classes is None else num_classes
        mean = p.mean if mean is None else mean
        std = p.std if std is None else std
        stats = resolve_stats(mean, std)
        self.mean = [float(v) for v in stats[0]] if stats else None
        self.std = [float(v) for v in stats[1]] if stats else None
        self.bands = list(bands) if bands is not None else None
        if in_channels is None:
            in_channels = len(self.bands) if self.bands is not None else p.in_channels
        if in_channels is None and self.mean is not None:
            in_channels = len(self.mean)
        self.in_channels = in_channels
        if self.mean is not None and in_channels is not None and len(self.mean) != in_channels:
            raise ConfigError(
                f"data.mean/std have {len(self.mean)} values but the data have {in_channels} bands per date; "
                "give per-band lists (see `changekit stats`)"
            )
        self.crop_size = crop_size if crop_size is not None else p.crop_size
        if augment and "exchange_time" in augment:  # open-cd's transform name
            augment = {**{k: v for k, v in augment.items() if k != "exchange_time"}, "exchange": augment["exchange_time"]}
        self.augment = augment
        self.save_hyperparameters()
        # resolved values recorded in the checkpoint (datamodule_hyper_parameters)
        self.hparams.update(resolved_mean=self.mean, resolved_std=self.std, resolved_bands=self.bands,
                            resolved_in_channels=self.in_channels)
        self.hparams.test_split = test_split  # the preset's default when not given (LightningCLI saves what was given)
        if input_range is not None and (len(input_range) != 2 or input_range[1] <= input_range[0]):
            raise ConfigError(f"data.input_range {input_range}: give [MIN, MAX] with MAX > MIN")
        self.datasets: dict[str, Any] = {}

    # ------------------------------------------------------------------ datasets
    def normalisation_info(self) -> dict[str, Any]:
        info = {"mean": self.mean, "std": self.std, "bands": self.bands, "in_channels": self.in_channels,
                "dataset": self.preset.name, "units": self.hparams.get("units")}
        standardize = (self.hparams.get("dataset_args") or {}).get("standardize")
        if standardize:  # each date standardised on its own before mean/std (the OSCD preset's option)
            info["standardize"] = standardize
        return info

    def _eval_stats(self) -> tuple[list[float] | None, list[float] | None]:
        """mean/std for evaluation data; with ``input_range``, folded with the linear map of MIN..MAX onto the
        training range (``(a x + b - mean) / std == (x - (mean - b) / a) / (std / a)``)."""
        rng, units = self.hparams.get("input_range"), self.hparams.get("units") or {}
        if rng is None or self.mean is None:
            return self.mean, self.std
        if not units.get("range"):
            raise ConfigError("data.input_range needs the training units, which this checkpoint does not record")
        (lo, hi), (tlo, thi) = rng, units["range"]
        a = (thi - tlo) / (hi - lo)
        b = tlo - lo * a
        return [(m - b) / a for m in self.mean], [s / a for s in self.std]

    def _transforms(self, train: bool):
        from changekit.data.transforms import build_transforms

        hp = self.hparams
        mean, std = (self.mean, self.std) if train else self._eval_stats()
        return build_transforms(
            train=train,
            crop_size=self.crop_size if train else None,
            cat_max_ratio=hp.cat_max_ratio,
            augment=self.augment,
            mean=mean,
            std=std,
            size_divisor=hp.size_divisor,
            ignore_index=hp.ignore_index,
        )

    def build_dataset(self, split: str | None, train: bool = False, root: str | None = None, labels: Any = True):
        from changekit.data.presets import build_dataset

        hp = self.hparams
        root = root or hp.root
        if not root:
            raise ConfigError("data.root is missing: set it to the dataset folder")
        kw: dict[str, Any] = dict(hp.dataset_args or {})
        for key in ("dirs", "suffixes", "split_dir", "list_file", "label_encoding"):
            if hp.get(key) is not None:
                kw[key] = tuple(hp[key]) if key in ("dirs", "suffixes") and isinstance(hp[key], list) else hp[key]
        kw.update(bands=self.bands, in_channels=self.in_channels, num_classes=hp.num_classes,
                  ignore_index=hp.ignore_index, transforms=self._transforms(train), labels=labels)
        try:
            return build_dataset(self.preset, root, split, **kw)
        except TypeError as e:
            raise ConfigError(f"data: {e}; dataset_args takes ChangeDataset arguments") from None

    def _check(self, ds, what: str, train: bool = False) -> None:
        """Headers (or every pixel) of every file before any loop; then the units against the training data's."""
        from changekit.data.datasets import check_units

        hp = self.hparams
        if hp.validate_data != "off":
            ds.validate(full=hp.validate_data == "full")
        if train:
            measured = ds.units()
            if hp.get("units"):  # resuming, or a given record: the training data must not have changed units
                check_units(measured, hp.units, what)
            # dtype and range; where the dataset knows them, the product level (L1C/L2A) and the band names too
            keep = ("dtype", "range", "product", "band_names")
            self.hparams.units = {k: measured[k] for k in keep if k in measured} if measured else None
        elif hp.check_units and hp.get("input_range") is None:
            check_units(ds.units(), hp.get("units") or {}, what)

    def setup(self, stage: str) -> None:
        hp = self.hparams
        splits = {"fit": [("train", hp.train_split, True), ("val", hp.val_split, False)],
                  "validate": [("val", hp.val_split, False)], "test": [("test", hp.test_split, False)],
                  "predict": [("predict", hp.predict_split or (None if hp.predict_root else hp.test_split), False)]}
        for key, split, train in splits.get(stage, []):
            if key in self.datasets:
                continue
            if key == "predict":
                ds = self.build_dataset(split, root=hp.predict_root, labels="auto")
            else:
                ds = self.build_dataset(split, train=train)
            self._check(ds, f"data ({key} split {split!r} of {ds.root})", train=train)
            self.datasets[key] = ds

    # ------------------------------------------------------------------ loaders
    def _loader(self, key: str, train: bool) -> DataLoader:
        ds = self.datasets[key]
        hp = self.hparams
        if train:
            if hp.train_repeat > 1:
                ds = ConcatDataset([ds] * hp.train_repeat)  # each draw gets its own crop and augmentation
            if len(ds) < hp.batch_size:
                raise ConfigError(f"the training set has {len(ds)} samples, fewer than data.batch_size={hp.batch_size}")
            return DataLoader(ds, batch_size=hp.batch_size, shuffle=True, drop_last=True, num_workers=hp.num_workers,
                              collate_fn=collate_pairs, persistent_workers=hp.num_workers > 0, pin_memory=torch.cuda.is_available())
        return DataLoader(ds, batch_size=hp.eval_batch_size, shuffle=False, num_workers=hp.num_workers,
                          collate_fn=collate_pairs,
                          sampler=eval_sampler(ds, self.trainer), pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", False)

