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
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from changekit.atomic import atomic_write, write_json
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
from changekit.geo.windows import Grid
from changekit.geo.writers import (
    StripWriter,
    assemble_class_rasters,
    assemble_rasters,
    strip_done,
    strip_path,
    to_cog,
)
from changekit.models.loading import load_model

__all__ = ["run_scene", "OUTPUTS", "CLASS_OUTPUTS"]

#: the outputs in --out: map raster, probability raster, polygons (GeoJSON, GeoPackage); of segmentation models
OUTPUTS = ("change.tif", "probability.tif", "changes.geojson", "changes.gpkg")
CLASS_OUTPUTS = ("classes.tif", "confidence.tif", "classes.geojson", "classes.gpkg")
PLAN_VERSION = 2
GDAL_CACHE_MB = 64

# ------------------------------------------------------------------------------------------- model
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


def check_options(window: int, overlap: int, batch_size: int, threshold: float | None, min_area: float,
                  simplify: float | None) -> None:
    """Every numeric option in its valid range (the CLI and the Python API share this check)."""
    rules = [
        (window >= 1, f"--window {window}: must be at least 1 pixel"),
        (0 <= overlap < window, f"--overlap {overlap}: must be at least 0 and smaller than --window ({window})"),
        (batch_size >= 1, f"--batch-size {batch_size}: must be at least 1"),
        (threshold is None or 0.0 <= threshold <= 1.0, f"--threshold {threshold}: a probability, between 0 and 1"),
        (min_area >= 0, f"--min-area {min_area}: must be 0 or more (CRS units squared)"),
        (simplify is None or simplify >= 0, f"--simplify {simplify}: must be 0 or more (CRS units)"),
    ]
    for ok, message in rules:
        if not ok:
            raise ConfigError(message)


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


def prepare_out(out: Path) -> None:
    """``--out`` must be a folder we can write (created if missing)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; give a folder for the outputs")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create the folder ({e.strerror}); choose another location") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: not writable by this user; choose another folder or fix its permissions")


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


def _read_plan(path: Path) -> Any:
    """The resume record of an unfinished run; a damaged one cannot vouch for its strips: start over."""
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"{path} (the record of an unfinished run) is damaged; pass --restart to start over") from None


class OutputLock:
    """``DIR/.changekit.lock`` (pid, host, start time) while a run writes into ``DIR``: a second run refuses.

    A lock left by a process that no longer exists on this host is taken over; one from another host is
    not (the other machine may still be writing): delete the file once that run is gone."""

    NAME = ".changekit.lock"

    def __init__(self, out: Path) -> None:
        self.path = out / self.NAME
        self.held = False

    def __enter__(self) -> OutputLock:
        import socket

        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                holder = self._holder()
                if holder.get("host") == me["host"] and not _alive(holder.get("pid")):
                    self.path.unlink(missing_ok=True)  # its process is gone: a stale lock
                    continue
                raise ConfigError(
                    f"--out {self.path.parent} is in use by another changekit run (pid {holder.get('pid', '?')} on "
                    f"{holder.get('host', '?')}, since {holder.get('started', '?')}); wait for it or choose another "
                    f"--out (if that run is gone, delete {self.path})"
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise ConfigError(f"could not take the lock {self.path}; delete it if no run uses --out {self.path.parent}")

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, TypeError, ValueError):
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _model_fingerprint(model: nn.Module) -> str:
    if hasattr(model, "fingerprint"):  # an exported graph: the file's hash
        return model.fingerprint()
    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _to_prob(logits: torch.Tensor) -> torch.Tensor:
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


def _class_probs(logits: torch.Tensor) -> torch.Tensor:
    """Per-class probabilities (B, K, H, W) of a segmentation model's logits (softmax over the classes)."""
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return torch.softmax(logits.float(), dim=1)


def model_task(model: Any, info: dict) -> str:
    """``segmentation`` (one image in, a class map out) or ``change`` (two dates in), as the model says."""
    return getattr(model, "task", None) or info.get("task") or "change"


# -------------------------------------------------------------------------------------- the runner
class _Predictor:
    """Reads windows of every input image and runs the model on them: change probabilities (K=1) of a change model,
    per-class probabilities (K classes) of a segmentation model."""

    def __init__(self, model: nn.Module, inputs: SceneInputs, scaling, mean, std, device: torch.device,
                 pad_multiple: int, labeller=None, segmentation: bool = False, date_stats: list | None = None) -> None:
        self.model, self.inputs, self.device, self.pad = model, inputs, device, pad_multiple
        self.labeller = labeller  # CLIPFormer: class lists per window from CLIP (--clip-per-window)
        self.segmentation = segmentation
        c = len(inputs.bands)
        t = lambda v: torch.tensor(v, dtype=torch.float32, device=device).view(1, c, 1, 1)
        self.gain, self.offset = t(scaling.gain), t(scaling.offset)
        self.clip = scaling.clip
        self.mean, self.std = t(mean), t(std)
        # models trained on each date standardised on its own: that date's band means and stds, per image
        self.date_stats = [(t(d["mean"]), t(d["std"])) for d in date_stats] if date_stats else None

    def read(self, windows: list[tuple[int, int, int, int]]) -> tuple[list, list, list]:
        """Every image's pixels and the joint valid mask of each window (I/O only: runs in the prefetch thread)."""
        xs: list[list[np.ndarray]] = [[] for _ in self.inputs.images]
        valids = []
        for x, y, w, h in windows:
            valid = None
            for k, dest in enumerate(xs):
                a, va = self.inputs.read(k + 1, x, y, w, h)
                dest.append(a)
                valid = va if valid is None else valid & va
            valids.append(valid)
        return windows, xs, valids

    def predict(self, batch: tuple[list, list, list], channels: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(probabilities float32 (K, h, w), valid bool (h, w))]`` for a batch from :meth:`read` (windows of equal
        size); windows without a valid pixel are not run."""
        windows, xs, valids = batch
        out = [np.zeros((channels, *v.shape), np.float32) for v in valids]
        run = [k for k, v in enumerate(valids) if v.any()]
        if run:
            probs = self._forward([np.stack([x[k] for k in run]) for x in xs], np.stack([valids[k] for k in run]),
                                  [windows[k] for k in run])
            if probs.shape[1] != channels:
                raise ConfigError(f"the model gave {probs.shape[1]} output channel(s) where its checkpoint records "
                                  f"{channels} classes; check --ckpt/--config")
            for k, p in zip(run, probs):
                out[k] = p
        return list(zip(out, valids))

    def _norm(self, x: np.ndarray, valid: torch.Tensor, k: int) -> torch.Tensor:
        t = torch.from_numpy(x).to(self.device)  # in place from here on: x is our own scratch array
        t.mul_(self.gain).add_(self.offset)
        if self.clip is not None:
            t.clamp_(self.clip[0], self.clip[1])
        if self.date_stats is not None:
            t.sub_(self.date_stats[k][0]).div_(self.date_stats[k][1])
        t.sub_(self.mean).div_(self.std)
        return t.mul_(valid)  # no-data pixels -> 0 (the training mean)

    @torch.inference_mode()
    def _forward(self, xs: list[np.ndarray], valid: np.ndarray, where: list | None = None) -> np.ndarray:
        v = torch.from_numpy(valid).to(self.device)[:, None].float()
        ts = [self._norm(x, v, k) for k, x in enumerate(xs)]
        texts = {}
        if self.labeller is not None:
            texts = dict(zip(("classes_a", "classes_b"), self.labeller(*ts, where)))
        h, w = ts[0].shape[-2:]
        ph, pw = (-h) % self.pad, (-w) % self.pad
        if ph or pw:
            ts = [F.pad(t, (0, pw, 0, ph), mode="replicate") for t in ts]
        logits = self.model(*ts, **texts)
        prob = _class_probs(logits) if self.segmentation else _to_prob(logits)[:, None]
        return prob[..., :h, :w].float().cpu().numpy()


def _plan(inputs: SceneInputs, grid: Grid, scaling, mean, std, fingerprint: str) -> dict:
    def stamp(p: str) -> Any:
        try:
            st = os.stat(p)
            return [os.path.abspath(p), st.st_size, st.st_mtime_ns]
        except OSError:
            return [p]

    return {
        "version": PLAN_VERSION, "inputs": [stamp(p) for p in inputs.paths],
        "aligned": inputs.aligned, "bands": inputs.bands, "height": grid.height, "width": grid.width,
        "window": grid.window, "overlap": grid.overlap, "scaling": [scaling.mode, list(scaling.gain),
        list(scaling.offset), list(scaling.clip) if scaling.clip else None], "mean": list(mean),
        "std": list(std), "model": fingerprint, "n_strips": grid.n_strips,
    }


def display_bands(inputs: SceneInputs, info: dict) -> dict | None:
    """For a Sentinel-2 model (its band names recorded): true colour (B04, B03, B02, 1-based in the order read)
    stretched over date 1's 2..98th percentiles, what ``changekit view`` shows the dates as; None otherwise (the
    viewer then shows the first three bands over the training range)."""
    names = (info.get("units") or {}).get("band_names")
    if not names or not all(b in names for b in ("B04", "B03", "B02")):
        return None
    from changekit.geo.inputs import _sample

    bands = [inputs.bands[names.index(b)] for b in ("B04", "B03", "B02")]
    sample = _sample(inputs.images[0], bands, 512)
    if sample.shape[1] == 0:
        return None
    return {"bands": bands, "ranges": [[float(v) for v in np.percentile(c, [2, 98])] for c in sample]}


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


def run_scene(
    t1: str | Path,
    t2: str | Path | None,
    out_dir: str | Path,
    *,
    ckpt: str | Path | None = None,
    config: str | Path | None = None,
    model: nn.Module | None = None,
    mean: Sequence[float] | str | None = None,
    std: Sequence[float] | str | None = None,
    bands: Sequence[int] | str | None = None,
    scale: str = "auto",
    input_range: Sequence[float] | None = None,
    align: bool = False,
    resampling: str = "bilinear",
    window: int = 512,
    overlap: int = 128,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    threshold: float | None = None,
    min_area: float = 0.0,
    simplify: float | None = None,
    vectors: bool = True,
    cog: bool = False,
    pixel_coords: bool = False,
    restart: bool = False,
    keep_partial: bool = False,
    progress: bool = True,
    pad_multiple: int = 32,
    clip_per_window: str | Path | None = None,
    clip_top_k: int = 9,
    precision: str = "fp32",
    compile: bool = False,  # noqa: A002 - the CLI flag's name
    on_window: Callable[[int], None] | None = None,
    stac: Any = None,
) -> dict:
    """Run a change model over two scenes; write ``change.tif``, ``probability.tif`` and polygons to ``out_dir``.

    A segmentation model (``task == "segmentation"``, e.g. MCAT-UNet) runs over one image instead: ``t1`` is the
    image and ``t2`` None (the CLI's ``--image``); per-class probabilities are blended across windows and the outputs
    are ``classes.tif`` (argmax, the class palette as colour table), ``confidence.tif`` and ``classes.geojson`` /
    ``classes.gpkg`` (polygons with ``class`` and ``class_name``). ``threshold`` (default 0.5) is for change models.

    The model comes from ``model`` (an ``nn.Module``; give ``mean``/``std`` in training units, else 0/1),
    or ``ckpt`` (a changekit checkpoint, which records its config, mean and std) or ``config`` + ``ckpt``.
    ``scale`` maps stored values to training units (see :func:`changekit.geo.inputs.resolve_scaling`).
    Under torchrun / Lightning DDP every rank calls this with the same arguments; strips are shared
    out by rank and rank 0 writes the outputs. ``on_window(n)`` is called after each window (tests).
    Dates without a CRS are refused unless ``pixel_coords`` (then polygons are in pixel units, ``crs`` None).
    Language models (CLIPFormer) get no class names in their prompts unless ``clip_per_window`` (CLIP weights) labels
    every window by zero-shot CLIP (the released ``mm_slide``, top ``clip_top_k`` of 56 classes); the lists used are
    written to ``window_classes.json`` and ``scene.json`` says which it was. ``precision`` (fp32, bf16, fp16) and
    ``compile`` go through :func:`changekit.optimize_for_inference` (bf16 needs native CPU support or CUDA, fp16
    CUDA; otherwise fp32 with a warning); an exported .onnx keeps the precision it was exported with.
    Sentinel-2 dates may be folders of band files or STAC Items (``ITEM.json``); ``stac``
    (:class:`changekit.data.stac.StacOptions`) crops Items to an area of interest and masks clouds; what it did is
    recorded under ``stac`` in ``scene.json``.
    Returns a summary dict (on rank 0 with output paths and counts).
    """
    t_start = time.perf_counter()
    check_options(window, overlap, batch_size, threshold, min_area, simplify)
    dev = resolve_device(device)
    out = Path(out_dir)
    partial = out / ".partial"
    dist = dist_context()
    lock = OutputLock(out)
    try:
        if dist.rank == 0:
            prepare_out(out)
            lock.__enter__()
        info: dict[str, Any] = {}
        if model is None and ckpt is not None and str(ckpt).endswith(".onnx"):
            from changekit.deploy.onnx import OnnxModel

            model = OnnxModel(ckpt, str(dev), {"mean": _stats(mean, "mean"), "std": _stats(std, "std")})
            info = model.changekit_info
        elif model is None:
            model = load_model(ckpt, config)
            info = model.changekit_info
        else:  # a model built in Python: what it records (load_model's changekit_info), if anything
            info = dict(getattr(model, "changekit_info", None) or {})
        model.eval()
        if dev.type == "cuda" and dev.index is None and dist.world_size > 1:
            dev = torch.device("cuda", local_rank())
        model.to(dev)
        takes_text = "classes_a" in inspect.signature(getattr(model, "forward", model)).parameters
        task = model_task(model, info)
        segmentation = task == "segmentation"
        paths = [t1] if t2 is None else [t1, t2]
        what = ckpt or config or type(model).__name__
        if segmentation and t2 is not None:
            raise ConfigError(f"{what} is a single-date segmentation model: give one image (--image), not two dates")
        if not segmentation and t2 is None:
            raise ConfigError(f"{what} is a {task} model: give the two dates (--t1 and --t2); --image is for "
                              "single-date segmentation models")
        if align and t2 is None:
            raise ConfigError("--align warps date 2 onto date 1's grid; with one image (--image) there is nothing to "
                              "align (drop --align)")
        if segmentation and threshold is not None:
            raise ConfigError("--threshold: a segmentation model's class map is the most probable class per pixel; "
                              "--threshold is for change models (drop it)")
        threshold = float(info.get("threshold") or 0.5) if threshold is None else threshold  # the model's own, if any
        channels = 1
        if segmentation:
            channels = int(getattr(model, "num_classes", None) or info.get("num_classes") or 0)
            if channels < 2:
                raise ConfigError(f"{what}: a segmentation model with {channels} classes; its checkpoint must record "
                                  "num_classes (2 or more)")
            class_names, palette = class_legend(info, channels)
        if clip_per_window and not takes_text:
            raise ConfigError(f"--clip-per-window: {ckpt or config or type(model).__name__} takes no class lists (only "
                              "language models such as CLIPFormer do; an exported .onnx has its lists baked in)")
        if precision != "fp32" or compile:
            from changekit.deploy.optimize import optimize_for_inference

            if not isinstance(model, nn.Module):
                raise ConfigError(f"--precision/--compile: {ckpt} is an ONNX graph, whose precision is fixed at export "
                                  "(changekit export --precision fp16); give the PyTorch checkpoint instead")
            model = optimize_for_inference(model, precision, compile=compile, device=dev)
            precision = model.precision
        in_ch = info.get("in_channels") or getattr(model, "in_channels", None)
        mean_v = _stats(mean, "mean") or _stats(info.get("mean"), "mean")
        std_v = _stats(std, "std") or _stats(info.get("std"), "std")
        if (mean_v is None or std_v is None) and (ckpt is not None or config is not None):
            raise ConfigError(f"{ckpt or config}: no mean/std recorded; pass --mean and --std in training units")
        band_list = parse_bands(bands)
        if stac is None:
            from changekit.data.stac import StacOptions

            stac = StacOptions()
        paths = _stac_or_band_folders(paths, info, out, stac)  # Sentinel-2 Items or band folders -> VRTs
        import rasterio

        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), \
                open_inputs(paths, band_list, align=align, resampling=resampling, n_bands=in_ch,
                            pixel_coords=pixel_coords) as inputs:
            n = len(inputs.bands)
            mean_v = mean_v or [0.0] * n
            std_v = std_v or [1.0] * n
            if len(mean_v) == 1:
                mean_v = mean_v * n
            if len(std_v) == 1:
                std_v = std_v * n
            if len(mean_v) != n or len(std_v) != n:
                raise ConfigError(f"mean/std have {len(mean_v)}/{len(std_v)} values but {n} bands are read")
            units = info.get("units") or {}
            target = train_range(mean_v, std_v, input_range if input_range is not None else units.get("range"))
            check_units(scale, inputs, target, units.get("dtype"))
            scaling = resolve_scaling(scale, inputs, target, units.get("dtype"))
            standardize = info.get("standardize")
            if standardize not in (None, "per-date"):
                raise ConfigError(f"{what}: records standardize={standardize!r}, which this version cannot apply")
            date_stats = date_statistics(inputs, scaling) if standardize == "per-date" else None
            grid = Grid(inputs.height, inputs.width, window, overlap)
            plan = _plan(inputs, grid, scaling, mean_v, std_v, _model_fingerprint(model))
            if date_stats:
                plan["date_stats"] = date_stats
            plan["precision"] = precision
            plan["channels"] = channels
            labeller, text_note = None, None
            if clip_per_window:
                from changekit.models.text.zero_shot import load_window_labeller

                labeller = load_window_labeller(clip_per_window, mean_v, std_v, target, clip_top_k, device=dev)
                text_note = labeller.describe() + "; lists in window_classes.json"
                plan["text"] = {"clip": str(clip_per_window), "top_k": int(clip_top_k)}
            elif takes_text:
                text_note = "no class lists: the foreground prompt names no class (as the released code without one)"
            plan_file = partial / "plan.json"
            if dist.rank == 0:
                if restart and partial.exists():
                    shutil.rmtree(partial)
                partial.mkdir(parents=True, exist_ok=True)
                if not plan_file.exists():
                    write_json(plan_file, plan)
            dist.barrier()
            same = plan_file.exists() and _read_plan(plan_file) == json.loads(json.dumps(plan))
            if not dist.all_ok(same):
                raise ConfigError(
                    f"{partial} holds an unfinished run with other inputs or settings; "
                    "run again with the same arguments to resume it, or pass --restart to start over"
                )
            summary = {"task": "segmentation" if segmentation else "change", "precision": precision, "scaling": scaling.describe(), "grid": f"{grid.height} x {grid.width}", "windows": grid.n_windows,
                       "crs": inputs.crs.to_string() if inputs.crs else None,
                       "strips": grid.n_strips, "aligned": inputs.aligned, "bands": inputs.bands,
                       "rank": dist.rank, "world_size": dist.world_size}
            predictor = _Predictor(model, inputs, scaling, mean_v, std_v, dev, pad_multiple, labeller, segmentation,
                                   date_stats)
            if text_note:
                summary["text_classes"] = text_note
            if stac.record:
                summary["stac"] = stac.record
            mine = [i for i in range(grid.n_strips) if i % dist.world_size == dist.rank]
            todo = [i for i in mine if not strip_done(partial, i, grid, channels)]
            summary["strips_resumed"] = len(mine) - len(todo)
            n_cols = len(grid.cols)
            t_pred = time.perf_counter()
            with _progress(progress and dist.rank == 0) as bar:
                label = f"windows (rank 0 of {dist.world_size})" if dist.world_size > 1 else "windows"
                task = bar.add_task(label, total=len(todo) * n_cols)
                counter = [0]

                def tick() -> None:
                    counter[0] += 1
                    bar.advance(task)
                    if on_window is not None:
                        on_window(counter[0])

                batches = _prefetched(_strip_batches(grid, todo, batch_size), predictor.read)
                try:
                    for i in todo:
                        _predict_strip(grid, i, batches, predictor, partial, tick, channels)
                finally:
                    batches.close()  # stops the reader thread (after its current read) on errors and Ctrl-C
                summary["predict_s"] = time.perf_counter() - t_pred
                summary["windows_run"] = counter[0]
                dist.barrier()
                if dist.rank == 0:
                    legend = (class_names, palette) if segmentation else None
                    summary.update(_finish(grid, inputs, partial, out, threshold, min_area, simplify, vectors, cog,
                                           keep_partial, bar, labeller, legend))
                    images = ({"image": os.path.abspath(inputs.paths[0])} if segmentation else
                              {"t1": os.path.abspath(inputs.paths[0]), "t2": os.path.abspath(inputs.paths[1])})
                    record = {"format": "changekit-scene/1", "task": "segmentation" if segmentation else "change",
                              **images, "bands": inputs.bands,
                              "scaling": {"mode": scaling.mode, "gain": list(scaling.gain),
                                          "offset": list(scaling.offset), "clip": scaling.clip},
                              "train_range": list(target), "mean": list(mean_v), "std": list(std_v),
                              **({"date_stats": date_stats} if date_stats else {}),
                              "window": window, "overlap": overlap, "precision": precision,
                              **({"class_names": class_names, "palette": palette} if segmentation else
                                 {"threshold": threshold}),
                              "model": str(ckpt or config or type(model).__name__), "crs": summary["crs"],
                              **({"stac": stac.record} if stac.record else {}),
                              **({"display": shown} if (shown := display_bands(inputs, info)) else {}),
                              **({"text_classes": text_note} if text_note else {}),
                              "outputs": {k: os.path.basename(v) for k, v in summary["outputs"].items()}}
                    write_json(out / "scene.json", record)  # what `changekit view` shows and how
                    summary["outputs"]["scene"] = str(out / "scene.json")
            dist.barrier()
        summary["seconds"] = time.perf_counter() - t_start
        summary["megapixels_per_s"] = grid.height * grid.width / 1e6 / max(summary["seconds"], 1e-9)
        return summary
    finally:
        lock.__exit__()
        dist.close()


def _strip_batches(grid: Grid, strips: Sequence[int], batch_size: int):
    """``((strip, columns), windows)`` for every batch of every strip, in the order they are predicted."""
    step = max(1, batch_size)
    for i in strips:
        for b0 in range(0, len(grid.cols), step):
            js = list(range(b0, min(len(grid.cols), b0 + step)))
            yield (i, js), [(grid.cols[j], grid.rows[i], grid.win_w, grid.win_h) for j in js]


def _prefetched(items, read: Callable):
    """``(key, read(windows))`` for each ``(key, windows)``, the next batch read in a thread while the model runs
    on this one (reading, decoding and scaling overlap the forward pass; one batch ahead bounds the memory)."""
    with ThreadPoolExecutor(1, thread_name_prefix="changekit-read") as pool:
        it = iter(items)
        nxt = next(it, None)
        pending = pool.submit(read, nxt[1]) if nxt is not None else None
        while nxt is not None:
            key, data = nxt[0], pending.result()
            nxt = next(it, None)
            pending = pool.submit(read, nxt[1]) if nxt is not None else None
            yield key, data


def _predict_strip(grid: Grid, i: int, batches, predictor: _Predictor, partial: Path,
                   tick: Callable[[], None], channels: int = 1) -> None:
    """Blend strip ``i``'s windows (its batches are the next ones in ``batches``) and commit its strip file."""
    h, w = grid.win_h, grid.win_w
    cols, wx = grid.cols, grid.weights_x()
    writer = StripWriter(partial, i, h, grid.width, channels)
    try:
        acc = np.zeros((channels, h, w), np.float32)
        valid_acc = np.zeros((h, w), bool)
        cur = 0
        done = 0
        while done < len(cols):
            (strip, js), data = next(batches)
            assert strip == i, "batches out of step with the strips"
            done += len(js)
            results = predictor.predict(data, channels)
            for j, (prob, valid) in zip(js, results):
                x = cols[j]
                if x > cur:  # columns [cur, x) are complete for this strip
                    s = x - cur
                    writer.write(cur, acc[..., :s], valid_acc[:, :s])
                    acc[..., :w - s] = acc[..., s:].copy()
                    acc[..., w - s:] = 0
                    valid_acc[:, :w - s] = valid_acc[:, s:].copy()
                    cur = x
                acc += wx[j] * prob
                valid_acc[:] = valid
                tick()
        writer.write(cur, acc, valid_acc)
        if predictor.labeller is not None:  # the strip's class lists, before the strip counts as done
            write_json(partial / f"classes_{i:05d}.json", predictor.labeller.records)
            predictor.labeller.records = []
        writer.commit()
    finally:
        writer.abandon()


def _finish(grid: Grid, inputs: SceneInputs, partial: Path, out: Path, threshold: float, min_area: float,
            simplify: float | None, vectors: bool, cog: bool, keep_partial: bool, bar, labeller=None,
            legend: tuple[list[str], list[list[int]]] | None = None) -> dict:
    """Blend the strips into the output rasters, polygonise, move everything into ``out``. ``legend`` (class names,
    palette): a segmentation model's class outputs instead of the change outputs."""
    missing = [i for i in range(grid.n_strips) if not strip_path(partial, i).exists()]
    if missing:
        raise ConfigError(
            f"{partial}: strips {missing[:5]}{'...' if len(missing) > 5 else ''} were not written; with several "
            "machines, --out must be on a file system that every rank shares"
        )
    t0 = time.perf_counter()
    task = bar.add_task("writing rasters", total=None)
    on_block = lambda d, n: bar.update(task, completed=d, total=n)  # noqa: E731
    raster_name, second_name, geojson_name, gpkg_name = CLASS_OUTPUTS if legend else OUTPUTS
    raster_tmp, second_tmp = partial / raster_name, partial / second_name
    if legend:
        counts = assemble_class_rasters(grid, partial, inputs.crs, inputs.transform, raster_tmp, second_tmp,
                                        legend[0], legend[1], on_block=on_block)
    else:
        counts = assemble_rasters(grid, partial, inputs.crs, inputs.transform, raster_tmp, second_tmp, threshold,
                                  on_block=on_block)
    if cog:
        for p in (raster_tmp, second_tmp):
            with atomic_write(p) as c:
                to_cog(p, c)
    if counts["valid"] == 0:  # nothing written to --out: an all-nodata result cannot be right
        where = " or ".join(inputs.named(k) for k in range(len(inputs.paths)))
        raise DataError(f"no valid pixel: every pixel is no-data in {where}"
                        + (" (where they overlap); check the nodata values, the bands and that the dates cover the "
                           "same area" if len(inputs.paths) > 1 else "; check its nodata value and the bands"))
    result: dict[str, Any] = {"valid_pixels": counts["valid"], "nodata_pixels": counts["nodata"],
                              "assemble_s": time.perf_counter() - t0}
    if legend:
        result["class_pixels"] = dict(zip(legend[0], counts["pixels"]))
    else:
        result["changed_pixels"] = counts["changed"]
    outputs = {Path(raster_name).stem: out / raster_name, Path(second_name).stem: out / second_name}
    t0 = time.perf_counter()
    if vectors:
        from changekit.geo.vectorize import polygons_into

        bar.add_task("polygons", total=None)
        vc, written = polygons_into(raster_tmp, out, (geojson_name, gpkg_name), partial, min_area=min_area,
                                    simplify=simplify, class_names=legend[0] if legend else None)
        result.update({"polygons": vc["polygons"], "polygons_dropped": vc["dropped_small"], "polygon_area": vc["area"]})
        outputs.update(written)
    result["vectorize_s"] = time.perf_counter() - t0
    if labeller is not None:  # every window's class lists, strip by strip (resumed strips included)
        windows = [w for i in range(grid.n_strips) for w in json.loads((partial / f"classes_{i:05d}.json").read_text())]
        write_json(out / "window_classes.json", {**labeller.summary(), "windows": windows})
        outputs["window_classes"] = out / "window_classes.json"
    os.replace(raster_tmp, out / raster_name)
    os.replace(second_tmp, out / second_name)
    if not keep_partial:
        shutil.rmtree(partial, ignore_errors=True)
    result["outputs"] = {k: str(v) for k, v in outputs.items()}
    return result
