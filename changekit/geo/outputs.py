"""What a scene run writes, chosen by the model's task: a change map (``change.tif``, ``probability.tif``, polygons
of change) or a class map (``classes.tif``, ``confidence.tif``, polygons per class), and :func:`finish`, which
turns the strip files into them and moves them into ``--out``."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from changekit.atomic import atomic_write, write_json
from changekit.errors import ConfigError, DataError
from changekit.geo.inputs import SceneInputs
from changekit.geo.windows import Grid
from changekit.geo.writers import assemble_class_rasters, assemble_rasters, strip_path, to_cog

__all__ = ["OUTPUTS", "CLASS_OUTPUTS", "ChangeOutputs", "ClassOutputs", "finish", "to_prob", "class_probs"]

#: the outputs in --out: map raster, probability raster, polygons (GeoJSON, GeoPackage); of segmentation models
OUTPUTS = ("change.tif", "probability.tif", "changes.geojson", "changes.gpkg")
CLASS_OUTPUTS = ("classes.tif", "confidence.tif", "classes.geojson", "classes.gpkg")


def to_prob(logits: torch.Tensor) -> torch.Tensor:
    """Change probability (B, H, W) from logits: sigmoid (1 class), softmax[1] (2), 1 - softmax[0] (more)."""
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    if logits.dim() == 3:
        logits = logits[:, None]
    k = logits.shape[1]
    if k == 1:
        return torch.sigmoid(logits[:, 0].float())
    p = torch.softmax(logits.float(), dim=1)
    return p[:, 1] if k == 2 else 1.0 - p[:, 0]


def class_probs(logits: torch.Tensor) -> torch.Tensor:
    """Per-class probabilities (B, K, H, W) of a segmentation model's logits (softmax over the classes)."""
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return torch.softmax(logits.float(), dim=1)


@dataclass
class ChangeOutputs:
    """Two dates in; the change probability blended, thresholded into ``change.tif``; polygons of change."""

    threshold: float
    task: str = "change"
    single_date = False
    channels = 1
    names = OUTPUTS
    class_names = None

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return to_prob(logits)[:, None]

    def assemble(self, grid: Grid, partial: Path, inputs: SceneInputs, tmp: tuple[Path, Path], on_block) -> dict:
        return assemble_rasters(grid, partial, inputs.crs, inputs.transform, *tmp, self.threshold, on_block=on_block)

    def counts(self, counts: dict) -> dict:
        return {"changed_pixels": counts["changed"]}

    def legend_record(self, threshold: float) -> dict:
        return {"threshold": threshold}


@dataclass
class ClassOutputs:
    """One image in; per-class probabilities blended, their argmax in ``classes.tif`` (the palette as colour
    table), its probability in ``confidence.tif``; one polygon per region of each class."""

    channels: int
    class_names: list[str]
    palette: list[list[int]] = field(default_factory=list)
    task: str = "segmentation"
    single_date = True
    names = CLASS_OUTPUTS

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return class_probs(logits)

    def assemble(self, grid: Grid, partial: Path, inputs: SceneInputs, tmp: tuple[Path, Path], on_block) -> dict:
        return assemble_class_rasters(grid, partial, inputs.crs, inputs.transform, *tmp, self.class_names,
                                      self.palette, on_block=on_block)

    def counts(self, counts: dict) -> dict:
        return {"class_pixels": dict(zip(self.class_names, counts["pixels"]))}

    def legend_record(self, threshold: float) -> dict:
        return {"class_names": self.class_names, "palette": self.palette}


def _check_strips(grid: Grid, partial: Path) -> None:
    missing = [i for i in range(grid.n_strips) if not strip_path(partial, i).exists()]
    if missing:
        raise ConfigError(
            f"{partial}: strips {missing[:5]}{'...' if len(missing) > 5 else ''} were not written; with several "
            "machines, --out must be on a file system that every rank shares"
        )


def _no_valid_pixel(inputs: SceneInputs) -> DataError:
    """Nothing is written to --out: an all-nodata result cannot be right."""
    where = " or ".join(inputs.named(k) for k in range(len(inputs.paths)))
    return DataError(f"no valid pixel: every pixel is no-data in {where}"
                     + (" (where they overlap); check the nodata values, the bands and that the dates cover the "
                        "same area" if len(inputs.paths) > 1 else "; check its nodata value and the bands"))


def finish(kind, grid: Grid, inputs: SceneInputs, partial: Path, out: Path, opts, bar, labeller=None) -> dict:
    """Blend the strips into the output rasters, polygonise, move everything into ``out``."""
    _check_strips(grid, partial)
    t0 = time.perf_counter()
    task = bar.add_task("writing rasters", total=None)
    on_block = lambda d, n: bar.update(task, completed=d, total=n)  # noqa: E731
    raster_name, second_name, geojson_name, gpkg_name = kind.names
    raster_tmp, second_tmp = partial / raster_name, partial / second_name
    counts = kind.assemble(grid, partial, inputs, (raster_tmp, second_tmp), on_block)
    if opts.cog:
        for p in (raster_tmp, second_tmp):
            with atomic_write(p) as c:
                to_cog(p, c)
    if counts["valid"] == 0:
        raise _no_valid_pixel(inputs)
    result: dict[str, Any] = {"valid_pixels": counts["valid"], "nodata_pixels": counts["nodata"],
                              "assemble_s": time.perf_counter() - t0, **kind.counts(counts)}
    outputs = {Path(raster_name).stem: out / raster_name, Path(second_name).stem: out / second_name}
    t0 = time.perf_counter()
    if opts.vectors:
        from changekit.geo.vectorize import polygons_into

        bar.add_task("polygons", total=None)
        vc, written = polygons_into(raster_tmp, out, (geojson_name, gpkg_name), partial, min_area=opts.min_area,
                                    simplify=opts.simplify, class_names=kind.class_names)
        result.update({"polygons": vc["polygons"], "polygons_dropped": vc["dropped_small"], "polygon_area": vc["area"]})
        outputs.update(written)
    result["vectorize_s"] = time.perf_counter() - t0
    if labeller is not None:  # every window's class lists, strip by strip (resumed strips included)
        windows = [w for i in range(grid.n_strips) for w in json.loads((partial / f"classes_{i:05d}.json").read_text())]
        write_json(out / "window_classes.json", {**labeller.summary(), "windows": windows})
        outputs["window_classes"] = out / "window_classes.json"
    os.replace(raster_tmp, out / raster_name)
    os.replace(second_tmp, out / second_name)
    if not opts.keep_partial:
        shutil.rmtree(partial, ignore_errors=True)
    result["outputs"] = {k: str(v) for k, v in outputs.items()}
    return result
