"""``changekit demo --task segmentation``: synthetic land cover -> a small MCAT-UNet -> mIoU, class maps, a figure
and a large georeferenced image through ``changekit scene --image``.

The single-date companion of :mod:`changekit.demo` (same stages, same CPU budget): it writes the synthetic
land-cover set (:func:`changekit.data.write_segmentation_dataset`, preset ``synthetic-landcover``: ground, tree,
road, building), trains ``mcat-unet`` at size ``t`` with :class:`~changekit.engine.seg_task.SegmentationTask`,
evaluates on the val split and writes to ``--out`` (default ``outputs/demo-segmentation``):

* ``metrics.json``: ``miou``, ``mf1``, ``oa``, ``kappa``, per-class values and the confusion matrix;
* ``model.ckpt``; ``predictions/maps/*.png`` (palette PNGs, class + 1 as the labels store it) and
  ``predictions/overlays/*.png`` (wrong pixels magenta);
* ``figure.png``: image | ground truth | prediction | errors for a few val tiles, and the training curves;
* ``scene/``: ``image.tif`` and ``label.tif`` (a synthetic georeferenced scene), the ``changekit scene --image``
  outputs (``classes.tif``, ``confidence.tif``, ``classes.geojson``/``.gpkg``) and ``preview.png``.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from changekit.atomic import atomic_write, write_json
from changekit.demo import (
    SAFETY_CAP_MINUTES,
    DemoContext,
    _Curves,
    figure_grid,
    fit,
    start,
)
from changekit.errors import ConfigError

__all__ = ["run_segmentation_demo", "SEGMENTATION_DEFAULTS"]

#: The recipe: MCAT-UNet-T (6.5 M parameters) on 64 px crops of the synthetic land cover, a few minutes on 2 cores.
SEGMENTATION_DEFAULTS: dict[str, Any] = {
    "arch": "mcat-unet",
    "size": 128,
    "n_train": 160,
    "n_val": 24,
    "crop": 64,
    "batch_size": 8,
    "steps": 300,
    "lr": 2e-3,
    "warmup": 20,
    "seed": 0,
    "val_every": 100,
}
#: the model's build arguments for the default arch (the smallest MSCAN; no stochastic depth for a short run)
ARCH_ARGS = {"mcat-unet": {"size": "t", "drop_path_rate": 0.0}}


def run_segmentation_demo(out: str | Path = "outputs/demo-segmentation", *, threads: int | None = None,
                          max_minutes: float = SAFETY_CAP_MINUTES, figure_samples: int = 4,
                          scene_size: tuple[int, int] = (1024, 1536),
                          scene: bool = True, progress: bool = True, **recipe: Any) -> DemoContext:
    """Run the segmentation demo into ``out``; ``recipe`` overrides :data:`SEGMENTATION_DEFAULTS`."""
    unknown = sorted(set(recipe) - set(SEGMENTATION_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown segmentation demo setting(s) {unknown}; the recipe keys are "
                          f"{sorted(SEGMENTATION_DEFAULTS)}")
    args = SimpleNamespace(out=str(out), threads=threads, max_minutes=max_minutes, figure_samples=figure_samples,
                           scene_size=tuple(scene_size), no_scene=not scene, no_progress=not progress,
                           **{**SEGMENTATION_DEFAULTS, **recipe})
    return _run(args)


def _run(args: SimpleNamespace) -> DemoContext:
    started = time.time()
    threads, out, data_root = start(args)
    import lightning.pytorch as pl

    from changekit.data.synthetic import LANDCOVER_CLASSES, LANDCOVER_PALETTE, write_segmentation_dataset
    from changekit.engine.datamodule import ChangeDataModule
    from changekit.engine.seg_task import SegmentationTask
    from changekit.engine.writers import PredictionWriter

    print(f"[1/6] synthetic land cover: {args.n_train}/{args.n_val} tiles of {args.size}x{args.size} -> {data_root}")
    write_segmentation_dataset(data_root, args.n_train, args.n_val, size=args.size, seed=args.seed)

    pl.seed_everything(args.seed, verbose=False)
    dm = ChangeDataModule(dataset="synthetic-landcover", root=str(data_root), batch_size=args.batch_size,
                          eval_batch_size=4, num_workers=0, crop_size=args.crop,
                          augment={"rotate": False, "hflip": 0.5, "vflip": 0.5, "photometric": False},
                          mean="imagenet", std="imagenet", size_divisor=None)
    task = SegmentationTask(args.arch, ARCH_ARGS.get(args.arch, {}), num_classes=len(LANDCOVER_CLASSES),
                            optimizer={"type": "adamw", "lr": args.lr, "weight_decay": 1e-4},
                            schedule={"warmup_iters": args.warmup, "warmup_start_factor": 1e-3, "power": 1.0,
                                      "min_lr": 0.0}, eval={"mode": "whole"})
    curves = _Curves(("miou", "oa"))
    trainer, train_s = fit(task, dm, args, out, curves, threads, "[2/6]")

    metrics, summary, ckpt = _test_and_save(trainer, task, dm, args, out, train_s)

    print(f"[4/6] class maps and error overlays -> {out / 'predictions'}")
    pred_dir = out / "predictions"
    trainer.callbacks.append(PredictionWriter(pred_dir, ignore_index=255, palette=LANDCOVER_PALETTE, value_offset=1))
    trainer.predict(task, datamodule=dm, return_predictions=False)

    print(f"[5/6] figure -> {out / 'figure.png'}")
    names = sorted(p.stem for p in (data_root / "img_dir" / "val").glob("*.png"))[: args.figure_samples]
    _figure(out / "figure.png", data_root, pred_dir, names, curves, metrics, args.arch)

    ctx = DemoContext(out=out, data_root=data_root, checkpoint=ckpt, metrics=summary, args=args, started=started)
    if not args.no_scene:
        _scene_step(ctx, ckpt, out, args)
    print(f"demo finished in {time.time() - started:.0f} s: mIoU {metrics['miou']:.4f}, OA {metrics['oa']:.4f} "
          f"(val split, {task.eval_mode_description}); outputs in {out}")
    return ctx


def _test_and_save(trainer, task, dm, args: SimpleNamespace, out: Path, train_s: float) -> tuple[dict, dict, Path]:
    """The val split's metrics (printed), the inference checkpoint and ``metrics.json``."""
    from changekit.data.synthetic import LANDCOVER_CLASSES
    from changekit.engine.seg_task import SEG_SUMMARY_KEYS
    from changekit.metrics import format_metrics_table, json_ready

    print("[3/6] evaluating on the val split")
    trainer.test(task, datamodule=dm, verbose=False)
    metrics = task.results["test"]
    print(format_metrics_table(metrics, task.eval_mode_description, list(LANDCOVER_CLASSES)))
    ckpt = out / "model.ckpt"
    with atomic_write(ckpt) as tmp_ckpt:
        trainer.save_checkpoint(tmp_ckpt, weights_only=True)
    summary = {k: metrics[k] for k in SEG_SUMMARY_KEYS}
    summary.update(per_class=metrics["per_class"], class_names=list(LANDCOVER_CLASSES), confusion=metrics["confusion"],
                   pixels=metrics["pixels"], eval_mode=task.eval_mode_description, split="val",
                   train_iterations=int(trainer.global_step), train_seconds=round(train_s, 1),
                   train_cut_short=trainer.global_step < args.steps,
                   recipe={k: getattr(args, k) for k in SEGMENTATION_DEFAULTS})
    write_json(out / "metrics.json", json_ready(summary))
    return metrics, summary, ckpt


def _scene_step(ctx: DemoContext, ckpt: Path, out: Path, args: SimpleNamespace) -> None:
    h, w = args.scene_size
    print(f"[6/6] large-scene inference on a synthetic {h}x{w} GeoTIFF -> {out / 'scene'}")
    s = segmentation_scene(ckpt, out / "scene", size=(h, w), progress=not args.no_progress)
    ctx.extra["scene"] = {k: s[k] for k in ("windows", "seconds", "megapixels_per_s", "polygons", "miou", "preview")}
    print(f"      {s['windows']} windows, {s['polygons']} class polygons, scene mIoU {s['miou']:.3f}; "
          f"preview {s['preview']}")
    print(f"      review it on a map: changekit view {out / 'scene'}")


def segmentation_scene(model_ckpt: str | Path, out_dir: str | Path, size: tuple[int, int] = (1024, 1536),
                       seed: int = 7, window: int = 256, overlap: int = 64, progress: bool = True) -> dict:
    """A synthetic georeferenced land-cover image -> ``changekit scene --image`` -> outputs, mIoU and a preview."""
    import numpy as np
    import rasterio
    import torch

    from changekit.data.synthetic import LANDCOVER_PALETTE, write_landcover_geotiff
    from changekit.geo.preview import class_preview_png
    from changekit.geo.scene import run_scene
    from changekit.metrics import confusion_matrix, metrics_from_confusion

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image, label = out / "image.tif", out / "label.tif"
    write_landcover_geotiff(image, label, size=size, seed=seed)
    summary = run_scene(image, None, out, ckpt=model_ckpt, window=window, overlap=overlap, progress=progress,
                        precision="fp32")  # the same figures on every CPU
    with rasterio.open(out / "classes.tif") as c, rasterio.open(label) as g:
        pred, truth = torch.from_numpy(c.read(1).astype(np.int64)), torch.from_numpy(g.read(1).astype(np.int64))
    mat = confusion_matrix(pred, truth, len(LANDCOVER_PALETTE))
    summary["miou"] = float(metrics_from_confusion(mat)["miou"])
    summary["preview"] = str(class_preview_png(image, out / "classes.tif", out / "preview.png", LANDCOVER_PALETTE,
                                               label=label))
    return summary


def _figure(path: Path, data_root: Path, pred_dir: Path, names: list[str], curves: Any, metrics: dict[str, Any],
            arch: str) -> Path:
    """Image | ground truth | prediction | errors rows for ``names`` plus the loss and mIoU curves."""
    import numpy as np
    from matplotlib.patches import Patch
    from PIL import Image

    from changekit.data.synthetic import LANDCOVER_CLASSES, LANDCOVER_PALETTE

    colours = np.array(LANDCOVER_PALETTE + ((0, 0, 0),) * (256 - len(LANDCOVER_PALETTE)), np.uint8)
    rows = []
    for name in names:
        truth = np.array(Image.open(data_root / "ann_dir" / "val" / f"{name}.png")).astype(np.int64) - 1
        rows.append((name, [np.array(Image.open(data_root / "img_dir" / "val" / f"{name}.png")),
                            np.where(truth[..., None] >= 0, colours[np.clip(truth, 0, 255)], 128).astype(np.uint8),
                            np.array(Image.open(pred_dir / "maps" / f"{name}.png").convert("RGB")),
                            np.array(Image.open(pred_dir / "overlays" / f"{name}.png"))]))
    legend = [Patch(color=np.array(c) / 255, label=n) for n, c in zip(LANDCOVER_CLASSES, LANDCOVER_PALETTE)]
    return figure_grid(path, rows, ["image", "ground truth", "prediction", "errors (magenta)"], curves,
                       ("val mIoU", "val OA"), f"final mIoU {metrics['miou']:.3f}", metrics["miou"],
                       f"changekit demo: {arch} on synthetic land cover", legend)
