"""``changekit scene``: a model over georeferenced scenes of any size, streamed window by window: a change model
over two dates, or a single-date segmentation model over one image.

See docs/scenes.md. The pipeline, per process (rank):

1. open the dates (GeoTIFF/COG/VRT/anything rasterio reads), check that they share date 1's grid or warp
   date 2 onto it (``align``), pick bands, work out the value scaling to the model's training units;
2. for each strip of windows assigned to this rank (``strip % world_size == rank``) that is not finished
   yet: read windows, batch them through the model, blend them horizontally into a strip file
   (:mod:`changekit.geo.writers`) renamed into place when complete (the resume record);
3. after a barrier, rank 0 blends the strips vertically into ``change.tif`` and ``probability.tif``,
   polygonises the change raster into ``changes.geojson`` / ``changes.gpkg`` (a segmentation model: per-class
   probabilities blended, their argmax in ``classes.tif``, its probability in ``confidence.tif``, polygons
   with a class attribute in ``classes.geojson`` / ``classes.gpkg``); every output is written
   under ``DIR/.partial`` and renamed into ``DIR`` when complete; then ``DIR/.partial`` is removed.

Peak memory is bounded by the window, the batch and GDAL's block cache, not by the scene size.

The parts: :mod:`~changekit.geo.options` (``SceneOptions``, checked once), :mod:`~changekit.geo.record` (the output
lock, the resume plan, ``scene.json``), :mod:`~changekit.geo.predictor` (windows read one batch ahead, the model,
strips blended), :mod:`~changekit.geo.outputs` (what the model's task writes, and ``finish``); this module loads the
model, checks it against the inputs and runs the parts in order.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from changekit.atomic import write_json
from changekit.data.oscd import STANDARDIZE
from changekit.data.presets import class_legend
from changekit.data.transforms import STATS
from changekit.errors import ConfigError, DataError
from changekit.geo.distributed import dist_context, local_rank
from changekit.geo.inputs import (
    SceneInputs,
    band_folder_inputs,
    check_units,
    date_statistics,
    open_inputs,
    parse_bands,
    resolve_scaling,
    train_range,
)
from changekit.geo.options import SceneOptions
from changekit.geo.outputs import CLASS_OUTPUTS, OUTPUTS, ChangeOutputs, ClassOutputs, finish
from changekit.geo.predictor import Predictor, predict_strip, prefetched, strip_batches
from changekit.geo.record import (
    OutputLock,
    display_bands,
    model_fingerprint,
    open_partial,
    prepare_out,
    resume_plan,
    scene_record,
)
from changekit.geo.windows import Grid
from changekit.geo.writers import strip_done
from changekit.models.base import text_inputs
from changekit.models.loading import load_model

__all__ = ["run_scene", "SceneOptions", "OUTPUTS", "CLASS_OUTPUTS"]

GDAL_CACHE_MB = 64


def _stats(value: Any, kind: str) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, str):
        key = value.strip().lower()
        if key in STATS:
            return list(STATS[key][0 if kind == "mean" else 1])
        try:
            return [float(v) for v in value.split(",")]
        except ValueError:
            raise ConfigError(f"{kind} {value!r}: give numbers separated by commas or one of {sorted(STATS)}") from None
    if isinstance(value, (int, float)):
        return [float(value)]
    return [float(v) for v in value]


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` (CUDA when PyTorch sees a GPU, else CPU), ``cpu``, ``cuda`` or ``cuda:N``, checked."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(f"--device {device}: PyTorch sees no CUDA GPU here; use --device cpu (or auto)")
        if dev.index is not None and dev.index >= n:
            raise ConfigError(f"--device {device}: only {n} CUDA device(s) visible (cuda:0..cuda:{n - 1})")
    elif dev.type != "cpu":
        raise ConfigError(f"--device {device}: use auto, cpu, cuda or cuda:N")
    return dev


def _stac_or_band_folders(paths: list, info: dict, out: Path, stac: Any) -> list[str]:
    """Dates given as STAC Items or Sentinel-2 band folders become VRTs of the model's bands in ``out``; stacked
    rasters pass through."""
    from changekit.data.stac import is_stac_item, stac_inputs

    items = [is_stac_item(p) for p in paths]
    for p, item in zip(paths, items):
        if str(p).lower().endswith(".json") and not item:
            raise DataError(f"{p}: not a STAC Item (a JSON object with \"type\": \"Feature\" and \"stac_version\"); "
                            "give the Item file of each date, or rasters")
    if any(items):
        if not all(items):
            raise DataError(f"{' and '.join(map(str, paths))}: give every date as a STAC Item, or none")
        return stac_inputs([str(p) for p in paths], info, out, stac)
    if stac.bbox is not None or stac.aoi is not None or stac.mask is not None:
        raise ConfigError("--bbox, --aoi and --mask apply to dates given as STAC Items (ITEM.json); crop and mask "
                          "stacked rasters before the run")
    return band_folder_inputs(paths, info, out)


def model_task(model: Any, info: dict) -> str:
    """``segmentation`` (one image in, a class map out) or ``change`` (two dates in), as the model says."""
    return getattr(model, "task", None) or info.get("task") or "change"


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("elapsed"),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), disable=not enabled,
                    transient=False)


# ----------------------------------------------------------------------------------- the parts of a run
def _load(opts: SceneOptions, dev: torch.device, dist) -> tuple[nn.Module, dict, torch.device]:
    """The model on its device and what it records (``changekit_info``: task, units, mean/std, threshold...)."""
    model = opts.model
    if model is None and opts.ckpt is not None and str(opts.ckpt).endswith(".onnx"):
        from changekit.deploy.onnx import OnnxModel

        model = OnnxModel(opts.ckpt, str(dev), {"mean": _stats(opts.mean, "mean"), "std": _stats(opts.std, "std")})
        info = model.changekit_info
    elif model is None:
        model = load_model(opts.ckpt, opts.config)
        info = model.changekit_info
    else:  # a model built in Python: what it records (load_model's changekit_info), if anything
        info = dict(getattr(model, "changekit_info", None) or {})
    model.eval()
    if dev.type == "cuda" and dev.index is None and dist.world_size > 1:
        dev = torch.device("cuda", local_rank())
    model.to(dev)
    return model, info, dev


def _outputs_for(model: Any, info: dict, one_image: bool, opts: SceneOptions, what: str):
    """The outputs the model's task makes (a change map or a class map), once the inputs fit that task."""
    task = model_task(model, info)
    segmentation = task == "segmentation"
    if segmentation and not one_image:
        raise ConfigError(f"{what} is a single-date segmentation model: give one image (--image), not two dates")
    if not segmentation and one_image:
        raise ConfigError(f"{what} is a {task} model: give the two dates (--t1 and --t2); --image is for "
                          "single-date segmentation models")
    if opts.align and one_image:
        raise ConfigError("--align warps date 2 onto date 1's grid; with one image (--image) there is nothing to "
                          "align (drop --align)")
    if segmentation and opts.threshold is not None:
        raise ConfigError("--threshold: a segmentation model's class map is the most probable class per pixel; "
                          "--threshold is for change models (drop it)")
    if not segmentation:  # the model's own threshold, if it has one
        return ChangeOutputs(float(info.get("threshold") or 0.5) if opts.threshold is None else opts.threshold)
    channels = int(getattr(model, "num_classes", None) or info.get("num_classes") or 0)
    if channels < 2:
        raise ConfigError(f"{what}: a segmentation model with {channels} classes; its checkpoint must record "
                          "num_classes (2 or more)")
    return ClassOutputs(channels, *class_legend(info, channels))


def _optimised(model: Any, opts: SceneOptions, dev: torch.device) -> tuple[Any, str, str | None]:
    """The model in the precision it runs in, that precision, and why ``auto`` chose it (None when asked for)."""
    if not isinstance(model, nn.Module):
        if opts.precision == "fp32" and not opts.compile:
            return model, opts.precision, None
        if opts.precision == "auto" and not opts.compile:
            exported = str(getattr(model, "changekit_info", {}).get("precision") or "fp32")
            return model, exported, "an ONNX graph runs in the precision it was exported with"
        raise ConfigError(f"--precision/--compile: {opts.ckpt} is an ONNX graph, whose precision is fixed at export "
                          "(changekit export --precision fp16 or --quantize int8); give the PyTorch checkpoint instead")
    from changekit.deploy.optimize import optimize_for_inference

    model = optimize_for_inference(model, opts.precision, compile=opts.compile, device=dev)
    return model, model.precision, model.precision_reason


def _per_band(values: list[float] | None, default: float, n: int) -> list[float]:
    values = values or [default] * n
    return values * n if len(values) == 1 else values


def _units(inputs: SceneInputs, mean_v, std_v, info: dict, opts: SceneOptions, what: str):
    """Mean/std per band read, the training range, the scaling of stored values to it, per-date statistics."""
    n = len(inputs.bands)
    mean_v, std_v = _per_band(mean_v, 0.0, n), _per_band(std_v, 1.0, n)
    if len(mean_v) != n or len(std_v) != n:
        raise ConfigError(f"mean/std have {len(mean_v)}/{len(std_v)} values but {n} bands are read")
    units = info.get("units") or {}
    target = train_range(mean_v, std_v, opts.input_range if opts.input_range is not None else units.get("range"))
    check_units(opts.scale, inputs, target, units.get("dtype"))
    scaling = resolve_scaling(opts.scale, inputs, target, units.get("dtype"))
    standardize = info.get("standardize")
    if standardize not in (None, *STANDARDIZE):
        raise ConfigError(f"{what}: records standardize={standardize!r}, which this version cannot apply")
    date_stats = date_statistics(inputs, scaling, standardize) if standardize else None
    return mean_v, std_v, target, scaling, date_stats


def _text_classes(opts: SceneOptions, takes_text: bool, mean_v, std_v, target, dev):
    """Language models: the CLIP labeller of ``--clip-per-window`` (or none), and the note saying which it is."""
    if opts.clip_per_window:
        from changekit.models.text.zero_shot import load_window_labeller

        labeller = load_window_labeller(opts.clip_per_window, mean_v, std_v, target, opts.clip_top_k, device=dev)
        return labeller, labeller.describe() + "; lists in window_classes.json"
    if takes_text:
        return None, "no class lists: the foreground prompt names no class (as the released code without one)"
    return None, None


def _predict(grid: Grid, partial: Path, predictor: Predictor, opts: SceneOptions, dist, bar) -> dict:
    """This rank's unfinished strips through the model into strip files; what was resumed, run and how long."""
    mine = [i for i in range(grid.n_strips) if i % dist.world_size == dist.rank]
    todo = [i for i in mine if not strip_done(partial, i, grid, predictor.kind.channels)]
    t_pred = time.perf_counter()
    label = f"windows (rank 0 of {dist.world_size})" if dist.world_size > 1 else "windows"
    task = bar.add_task(label, total=len(todo) * len(grid.cols))
    counter = [0]

    def tick() -> None:
        counter[0] += 1
        bar.advance(task)
        if opts.on_window is not None:
            opts.on_window(counter[0])

    batches = prefetched(strip_batches(grid, todo, opts.batch_size), predictor.read)
    try:
        for i in todo:
            predict_strip(grid, i, batches, predictor, partial, tick)
    finally:
        batches.close()  # stops the reader thread (after its current read) on errors and Ctrl-C
    return {"strips_resumed": len(mine) - len(todo), "predict_s": time.perf_counter() - t_pred,
            "windows_run": counter[0]}


# ----------------------------------------------------------------------------------------- the run
def run_scene(t1: str | Path, t2: str | Path | None, out_dir: str | Path, options: SceneOptions | None = None,
              **kwargs: Any) -> dict:
    """Run a change model over two scenes; write ``change.tif``, ``probability.tif`` and polygons to ``out_dir``.

    A segmentation model (``task == "segmentation"``, e.g. MCAT-UNet) runs over one image instead: ``t1`` is the
    image and ``t2`` None (the CLI's ``--image``); per-class probabilities are blended across windows and the outputs
    are ``classes.tif`` (argmax, the class palette as colour table), ``confidence.tif`` and ``classes.geojson`` /
    ``classes.gpkg`` (polygons with ``class`` and ``class_name``).

    The settings are a :class:`~changekit.geo.options.SceneOptions` (``options``) or its fields as keyword
    arguments (which override ``options``'s). Under torchrun / Lightning DDP every rank calls this with the same
    arguments; strips are shared out by rank and rank 0 writes the outputs. Dates without a CRS are refused unless
    ``pixel_coords`` (then polygons are in pixel units, ``crs`` None). Language models (CLIPFormer) get no class names
    in their prompts unless ``clip_per_window``; the lists used are written to ``window_classes.json``. Sentinel-2
    dates may be folders of band files or STAC Items (``ITEM.json``); what ``stac`` did is recorded under ``stac`` in
    ``scene.json``. Returns a summary dict (on rank 0 with output paths and counts).
    """
    t_start = time.perf_counter()
    opts = replace(options, **kwargs) if options is not None else SceneOptions(**kwargs)
    dev = resolve_device(opts.device)
    out = Path(out_dir)
    dist = dist_context()
    try:
        if dist.rank == 0:
            prepare_out(out)
        with OutputLock(out, held=dist.rank == 0):
            summary = _run(t1, t2, out, opts, dev, dist)
        summary["seconds"] = time.perf_counter() - t_start
        summary["megapixels_per_s"] = summary.pop("pixels") / 1e6 / max(summary["seconds"], 1e-9)
        return summary
    finally:
        dist.close()


def _run(t1, t2, out: Path, opts: SceneOptions, dev: torch.device, dist) -> dict:
    partial = out / ".partial"
    model, info, dev = _load(opts, dev, dist)
    takes_text = "classes_a" in text_inputs(model)
    what = opts.ckpt or opts.config or type(model).__name__
    kind = _outputs_for(model, info, t2 is None, opts, what)
    if opts.clip_per_window and not takes_text:
        raise ConfigError(f"--clip-per-window: {what} takes no class lists (only language models such as CLIPFormer "
                          "do; an exported .onnx has its lists baked in)")
    model, precision, why = _optimised(model, opts, dev)
    in_ch = info.get("in_channels") or getattr(model, "in_channels", None)
    mean_v = _stats(opts.mean, "mean") or _stats(info.get("mean"), "mean")
    std_v = _stats(opts.std, "std") or _stats(info.get("std"), "std")
    if (mean_v is None or std_v is None) and (opts.ckpt is not None or opts.config is not None):
        raise ConfigError(f"{opts.ckpt or opts.config}: no mean/std recorded; pass --mean and --std in training units")
    band_list = parse_bands(opts.bands)
    paths = [t1] if t2 is None else [t1, t2]
    paths = _stac_or_band_folders(paths, info, out, opts.stac)  # Sentinel-2 Items or band folders -> VRTs
    import rasterio

    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), \
            open_inputs(paths, band_list, align=opts.align, resampling=opts.resampling, n_bands=in_ch,
                        pixel_coords=opts.pixel_coords) as inputs:
        mean_v, std_v, target, scaling, date_stats = _units(inputs, mean_v, std_v, info, opts, what)
        grid = Grid(inputs.height, inputs.width, opts.window, opts.overlap)
        labeller, text_note = _text_classes(opts, takes_text, mean_v, std_v, target, dev)
        plan = resume_plan(inputs, grid, scaling, mean_v, std_v, model_fingerprint(model),
                           **({"date_stats": date_stats} if date_stats else {}), precision=precision,
                           channels=kind.channels,
                           **({"text": {"clip": str(opts.clip_per_window), "top_k": int(opts.clip_top_k)}}
                              if labeller is not None else {}))
        open_partial(partial, plan, opts.restart, dist)
        summary = {"task": kind.task, "precision": precision, **({"precision_reason": why} if why else {}),
                   "scaling": scaling.describe(),
                   "grid": f"{grid.height} x {grid.width}", "windows": grid.n_windows,
                   "crs": inputs.crs.to_string() if inputs.crs else None,
                   "strips": grid.n_strips, "aligned": inputs.aligned, "bands": inputs.bands,
                   "rank": dist.rank, "world_size": dist.world_size,
                   **({"text_classes": text_note} if text_note else {}),
                   **({"stac": opts.stac.record} if opts.stac.record else {})}
        predictor = Predictor(model, inputs, scaling, mean_v, std_v, dev, opts.pad_multiple, kind, labeller,
                              date_stats)
        with _progress(opts.progress and dist.rank == 0) as bar:
            summary.update(_predict(grid, partial, predictor, opts, dist, bar))
            dist.barrier()
            if dist.rank == 0:
                summary.update(finish(kind, grid, inputs, partial, out, opts, bar, labeller))
                record = scene_record(kind, inputs, scaling, target, mean_v, std_v, date_stats, window=opts.window,
                                      overlap=opts.overlap, precision=precision, precision_reason=why,
                                      threshold=getattr(kind, "threshold", None),
                                      model_name=str(opts.ckpt or opts.config or type(model).__name__),
                                      crs=summary["crs"], stac_record=opts.stac.record,
                                      display=display_bands(inputs, info), text_note=text_note,
                                      outputs=summary["outputs"])
                write_json(out / "scene.json", record)  # what `changekit view` shows and how
                summary["outputs"]["scene"] = str(out / "scene.json")
        dist.barrier()
    summary["pixels"] = grid.height * grid.width
    return summary
