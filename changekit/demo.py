"""``changekit demo``: synthetic data -> trained FC-Siam-diff -> metrics, change maps, overlays and a figure.

Runs on a laptop CPU in a few minutes (2 cores): it writes a small synthetic dataset
(:func:`changekit.data.write_dataset`), trains ``fc_siam_diff`` (or ``--arch``) with the engine
(:class:`~changekit.engine.task.ChangeDetectionTask`), evaluates on the held-out test split and writes to
``--out`` (default ``outputs/demo``):

* ``metrics.json``: change-class ``precision``, ``recall``, ``f1``, ``iou`` and ``oa``, ``kappa``, ``miou``,
  ``mf1`` at top level, plus per-class values, the confusion matrix and the evaluation mode;
* ``model.ckpt``: the trained model (``changekit test/predict --ckpt_path``, ``load_checkpoint_model``);
* ``predictions/maps/*.png`` (0/255) and ``predictions/overlays/*.png`` (TP white, TN black, FP red, FN green);
* ``figure.png``: T1 | T2 | ground truth | prediction for a few test samples, and the training curves;
* ``logs/``: CSV training log; ``data/``: the synthetic dataset.

Then :func:`demo_scene` runs the model over a synthetic georeferenced scene with ``changekit scene``, and last
:func:`changekit.demo_real.run_real_imagery` runs changekit's shipped Sentinel-2 model over real OSCD city pairs
(``<out>/paris``, ``<out>/lasvegas``, ``figure_sentinel2.png``, ``sentinel2.json``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from changekit.atomic import atomic_write, write_json
from changekit.errors import ConfigError

__all__ = ["run_demo", "demo_scene", "DemoContext", "DEFAULTS"]

#: The recipe, tuned to reach change-class F1 >= 0.8 on the synthetic test split in < 5 min on 2 CPU cores
#: (one thread, deterministic: test F1 0.876 at 400 iterations with seed 0 on every run; 0.86-0.90 over other
#: data seeds).
DEFAULTS: dict[str, Any] = {
    "arch": "fc_siam_diff",
    "size": 128,
    "n_train": 160,
    "n_val": 12,
    "n_test": 24,
    "crop": 64,
    "batch_size": 8,
    "steps": 400,
    "lr": 2e-3,
    "warmup": 20,
    "seed": 0,
    "dice": 0.5,
    "val_every": 100,
}


@dataclass
class DemoContext:
    """What the demo produced, handed to every extra step."""

    out: Path
    data_root: Path
    checkpoint: Path
    metrics: dict[str, Any]
    args: SimpleNamespace
    started: float
    extra: dict[str, Any] = field(default_factory=dict)


def scene_step(ctx: DemoContext) -> None:
    """Last stage: a synthetic georeferenced scene pair through ``changekit scene`` with the demo model."""
    if ctx.args.no_scene:
        return
    h, w = ctx.args.scene_size
    print(f"[6/7] large-scene inference on a synthetic {h}x{w} GeoTIFF pair -> {ctx.out / 'scene'}")
    s = demo_scene(ctx.checkpoint, ctx.out / "scene", size=(h, w), progress=not ctx.args.no_progress)
    ctx.extra["scene"] = {k: s[k] for k in ("windows", "seconds", "megapixels_per_s", "changed_pixels", "polygons", "f1", "preview")
                          if k in s}
    print(f"      {s.get('windows')} windows, {s.get('polygons')} change polygons, scene F1 {s.get('f1', float('nan')):.3f}; "
          f"preview {s.get('preview')}")
    print(f"      review it on a map: changekit view {ctx.out / 'scene'}")


def real_step(ctx: DemoContext) -> None:
    """The shipped Sentinel-2 model on real imagery (:mod:`changekit.demo_real`)."""
    if ctx.args.no_real:
        return
    from changekit.demo_real import DEMO_MODEL, run_real_imagery

    print(f"[7/7] real Sentinel-2 pairs (OSCD) through `changekit scene --model {DEMO_MODEL}` -> {ctx.out}/<city>")
    res = run_real_imagery(ctx.out, progress=not ctx.args.no_progress)
    for city, r in res.items():
        score = (f"F1 {r['f1']:.3f}  IoU {r['iou']:.3f}  P {r['precision']:.3f}  R {r['recall']:.3f} against its "
                 "change map (a held-out city)" if "f1" in r else "no public labels")
        print(f"      {city}: {r['changed_pixels']} changed pixels of {r['valid_pixels']} in {r['seconds']:.1f} s; "
              f"{score}; changekit view {ctx.out / city}")
    print(f"      figure -> {ctx.out / 'figure_sentinel2.png'}")
    write_json(ctx.out / "sentinel2.json", {"model": DEMO_MODEL, "cities": res})
    ctx.extra["sentinel2"] = res


class _Curves:
    """Collects training loss and validation metrics (``keys``: change F1 and IoU, or mIoU and OA) for the figure
    (a Lightning callback)."""

    def __new__(cls, keys: tuple[str, str] = ("f1", "iou")):
        from lightning.pytorch.callbacks import Callback

        class Curves(Callback):
            def __init__(self) -> None:
                self.train: list[tuple[int, float]] = []
                self.val: list[tuple[int, float, float]] = []

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                loss = outputs["loss"] if isinstance(outputs, dict) else outputs
                self.train.append((trainer.global_step, float(loss)))

            def on_validation_epoch_end(self, trainer, pl_module):
                if trainer.sanity_checking or "val" not in pl_module.results:
                    return
                r = pl_module.results["val"]
                a, b = float(r[keys[0]]), float(r[keys[1]])  # NaN when nothing is predicted as change: 0
                self.val.append((trainer.global_step, a if a == a else 0.0, b if b == b else 0.0))

        return Curves()


def _smooth(values: list[float], k: int = 20) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc = v if i == 0 else acc + (v - acc) / min(i + 1, k)
        out.append(acc)
    return out


def make_figure(path: Path, data_root: Path, pred_dir: Path, names: list[str], curves: Any, metrics: dict[str, Any],
                arch: str = "fc_siam_diff") -> Path:
    """T1 | T2 | ground truth | prediction rows for ``names`` plus loss and F1 curves; written atomically."""
    import numpy as np
    from PIL import Image

    rows = [(name, [np.array(Image.open(data_root / "test" / d / f"{name}.png")) for d in ("A", "B", "label")]
             + [np.array(Image.open(pred_dir / "overlays" / f"{name}.png"))]) for name in names]
    return figure_grid(path, rows, ["T1", "T2", "ground truth", "prediction (overlay)"], curves,
                       ("val F1 (change)", "val IoU (change)"), f"test F1 {metrics['f1']:.3f}", metrics["f1"],
                       f"changekit demo: {arch} on synthetic scenes — legend: TP white, TN black, FP red, FN green")


def figure_grid(path: Path, rows: list[tuple[str, list[Any]]], titles: list[str], curves: Any,
                val_labels: tuple[str, str], final_label: str, final: float, suptitle: str,
                legend_extra: list[Any] = ()) -> Path:
    """The demos' figure: one row of images per sample (named ``rows[i][0]``; grey or RGB uint8), then the training
    loss and the two validation curves of :class:`_Curves` with the final figure as a line; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, k = len(rows), len(titles)
    fig = plt.figure(figsize=(11, 2.6 * n + 3.2))
    gs = fig.add_gridspec(n + 1, k, height_ratios=[1] * n + [1.1])
    for r, (name, imgs) in enumerate(rows):
        for c, im in enumerate(imgs):
            ax = fig.add_subplot(gs[r, c])
            ax.imshow(im, cmap="gray" if im.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=10)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    ax = fig.add_subplot(gs[n, : k // 2])
    if curves.train:
        steps, losses = zip(*curves.train)
        ax.plot(steps, losses, color="0.75", lw=0.8, label="train loss")
        ax.plot(steps, _smooth(list(losses)), color="C0", lw=1.5, label="smoothed")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.set_title("training loss", fontsize=10)
    ax = fig.add_subplot(gs[n, k // 2:])
    if curves.val:
        steps, a, b = zip(*curves.val)
        ax.plot(steps, a, "o-", color="C1", label=val_labels[0])
        ax.plot(steps, b, "s--", color="C2", label=val_labels[1])
    ax.axhline(final, color="C3", lw=1, ls=":", label=final_label)
    ax.set_ylim(0, 1)
    ax.set_xlabel("iteration")
    handles = ax.get_legend_handles_labels()[0] + list(legend_extra)
    ax.legend(handles=handles, fontsize=8, loc="lower right", ncol=2 if legend_extra else 1)
    ax.set_title("validation", fontsize=10)
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return path


#: Training stops here only if the machine is far slower than expected; a run that reaches it says so (its figures
#: are then those of fewer iterations), so a seeded demo otherwise gives the same numbers every time.
SAFETY_CAP_MINUTES = 20.0


def warn_if_cut_short(trainer: Any, args: SimpleNamespace) -> None:
    """Say so when the wall-clock safety cap, not the step count, ended training."""
    if trainer.global_step < args.steps:
        print(f"      warning: the {args.max_minutes:g}-minute safety cap stopped training after {trainer.global_step} "
              f"of {args.steps} iterations; the figures below are those of a shorter run than the recipe "
              "(rerun on an idler machine, or raise --max-minutes)")


def _default_threads() -> int:
    """One thread. FC-Siam-diff on 64 px crops is many short ops: on a machine shared with other jobs, two
    threads that wait for each other ran 2.6x slower than one (measured); on an idle 2-core machine one thread
    still finishes the demo in under 3 minutes. ``--threads 2`` (or more) on a machine of your own."""
    return 1


def _data_and_task(args: SimpleNamespace, data_root: Path):
    """The synthetic dataset written, its datamodule and the change task of the recipe (seeded: in this order)."""
    import lightning.pytorch as pl

    from changekit.data import write_dataset
    from changekit.engine.change_task import ChangeDetectionTask
    from changekit.engine.datamodule import ChangeDataModule

    print(f"[1/7] synthetic dataset: {args.n_train}/{args.n_val}/{args.n_test} pairs of {args.size}x{args.size} -> {data_root}")
    write_dataset(data_root, args.n_train, args.n_val, args.n_test, size=args.size, seed=args.seed)
    pl.seed_everything(args.seed, verbose=False)
    dm = ChangeDataModule(
        dataset="folder",
        root=str(data_root),
        batch_size=args.batch_size,
        eval_batch_size=4,
        num_workers=0,
        crop_size=args.crop,
        cat_max_ratio=0.75,
        augment={"rotate": False, "hflip": 0.5, "vflip": 0.5, "photometric": False, "exchange": 0.5},
        mean="imagenet",
        std="imagenet",
        size_divisor=None,
        validate_data="headers",
    )
    task = ChangeDetectionTask(
        arch=args.arch,
        arch_args={"in_channels": 3},
        loss={"ce": 1.0, "dice": args.dice},
        optimizer={"type": "adamw", "lr": args.lr, "weight_decay": 1e-4},
        schedule={"warmup_iters": args.warmup, "warmup_start_factor": 1e-3, "power": 1.0, "min_lr": 0.0},
        eval={"mode": "whole"},
    )
    return dm, task


def _trainer(args: SimpleNamespace, out: Path, curves):
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import RichProgressBar
    from lightning.pytorch.loggers import CSVLogger

    callbacks = [curves]
    if not args.no_progress:
        callbacks.append(RichProgressBar(leave=False))
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=args.steps,
        max_time={"minutes": args.max_minutes},
        val_check_interval=min(args.val_every, args.steps),
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=CSVLogger(str(out), name="logs", version=""),
        enable_checkpointing=False,
        enable_progress_bar=not args.no_progress,
        enable_model_summary=False,
        callbacks=callbacks,
        log_every_n_steps=10,
        deterministic=True,
    )


def fit(task, dm, args: SimpleNamespace, out: Path, curves, threads: int, step: str):
    """Train ``task`` on ``dm`` as the recipe says (``step``: the progress label, e.g. ``[2/7]``); the trainer and the
    seconds it took."""
    trainer = _trainer(args, out, curves)
    t0 = time.time()
    print(f"{step} training {args.arch} for {args.steps} iterations (batch {args.batch_size}, crop {args.crop}, "
          f"lr {args.lr}, {threads} thread(s))")
    task.print_tables = False
    trainer.fit(task, datamodule=dm)
    train_s = time.time() - t0
    print(f"      trained {trainer.global_step} iterations in {train_s:.0f} s")
    warn_if_cut_short(trainer, args)
    return trainer, train_s


def _test_and_save(trainer, task, dm, args: SimpleNamespace, out: Path, train_s: float) -> tuple[dict, dict, Path]:
    """The test split's metrics (printed), the inference checkpoint and ``metrics.json``."""
    from changekit.metrics import SUMMARY_KEYS, format_metrics_table, json_ready

    print("[3/7] evaluating on the held-out test split")
    trainer.test(task, datamodule=dm, verbose=False)
    metrics = task.results["test"]
    print(format_metrics_table(metrics, task.eval_mode_description))
    ckpt = out / "model.ckpt"
    with atomic_write(ckpt) as tmp_ckpt:
        trainer.save_checkpoint(tmp_ckpt, weights_only=True)  # an inference model: no optimiser state
    summary = {k: metrics[k] for k in SUMMARY_KEYS}
    summary.update(
        per_class=metrics["per_class"],
        confusion=metrics["confusion"],
        pixels=metrics["pixels"],
        eval_mode=task.eval_mode_description,
        split="test",
        train_iterations=int(trainer.global_step),
        train_seconds=round(train_s, 1),
        train_cut_short=trainer.global_step < args.steps,
        recipe={k: getattr(args, k) for k in DEFAULTS},
    )
    write_json(out / "metrics.json", json_ready(summary))
    return metrics, summary, ckpt


def _predict_and_figure(trainer, task, dm, args: SimpleNamespace, out: Path, data_root: Path, curves, metrics) -> None:
    import numpy as np
    from PIL import Image

    from changekit.engine.writers import PredictionWriter

    print(f"[4/7] change maps and error overlays -> {out / 'predictions'}")
    pred_dir = out / "predictions"
    trainer.callbacks.append(PredictionWriter(pred_dir, ignore_index=255))
    trainer.predict(task, datamodule=dm, return_predictions=False)
    print(f"[5/7] figure -> {out / 'figure.png'}")
    labels = sorted((data_root / "test" / "label").glob("*.png"))
    # show the samples with the most change first (a figure of empty labels says little)
    ranked = sorted(labels, key=lambda p: -int((np.array(Image.open(p)) > 0).sum()))
    names = [p.stem for p in ranked[: args.figure_samples]]
    make_figure(out / "figure.png", data_root, pred_dir, names, curves, metrics, arch=args.arch)


def start(args: SimpleNamespace) -> tuple[int, Path, Path]:
    """The threads set for the run, the output folder (created) and its data folder."""
    import torch

    threads = args.threads or _default_threads()
    torch.set_num_threads(threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return threads, out, out / "data"


def _run(args: SimpleNamespace) -> DemoContext:
    started = time.time()
    threads, out, data_root = start(args)
    dm, task = _data_and_task(args, data_root)
    curves = _Curves()
    trainer, train_s = fit(task, dm, args, out, curves, threads, "[2/7]")
    metrics, summary, ckpt = _test_and_save(trainer, task, dm, args, out, train_s)
    _predict_and_figure(trainer, task, dm, args, out, data_root, curves, metrics)
    ctx = DemoContext(out=out, data_root=data_root, checkpoint=ckpt, metrics=summary, args=args, started=started)
    scene_step(ctx)
    real_step(ctx)
    total = time.time() - started
    print(f"demo finished in {total:.0f} s: change-class F1 {metrics['f1']:.4f}, IoU {metrics['iou']:.4f} "
          f"(test split, {task.eval_mode_description}); outputs in {out}")
    return ctx


def run_demo(out: str | Path = "outputs/demo", *, threads: int | None = None, max_minutes: float = SAFETY_CAP_MINUTES,
             figure_samples: int = 4, scene_size: tuple[int, int] = (1536, 2048), scene: bool = True,
             real: bool = True, progress: bool = True, **recipe: Any) -> DemoContext:
    """Run the demo into ``out``; ``recipe`` overrides :data:`DEFAULTS` (``steps=100``, ``lr=1e-3`` ...)."""
    unknown = sorted(set(recipe) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown demo setting(s) {unknown}; the recipe keys are {sorted(DEFAULTS)}")
    args = SimpleNamespace(out=str(out), threads=threads, max_minutes=max_minutes, figure_samples=figure_samples,
                           scene_size=tuple(scene_size), no_scene=not scene, no_real=not real,
                           no_progress=not progress,
                           **{**DEFAULTS, **recipe})
    return _run(args)


def demo_scene(model_ckpt: Any, out_dir: str | Path, size: tuple[int, int] = (2048, 3072), seed: int = 7,
               window: int = 512, overlap: int = 128, batch_size: int = 4, device: str = "cpu",
               progress: bool = True, **scene_kwargs: Any) -> dict:
    """Synthetic georeferenced pair (``size`` px) -> ``changekit scene`` with the demo model -> outputs + preview.

    ``model_ckpt``: a changekit checkpoint path (mean/std recorded inside) or an ``nn.Module`` (then pass
    ``mean``/``std`` in ``scene_kwargs``). Writes, under ``out_dir``: ``t1.tif``, ``t2.tif``, ``label.tif``,
    ``change.tif``, ``probability.tif``, ``changes.geojson``, ``changes.gpkg`` and ``preview.png``.
    Returns the :func:`run_scene` summary plus ``preview``, ``inputs`` and, with a label, ``f1``.
    """
    import rasterio

    from changekit.data.synthetic import write_geotiff_pair
    from changekit.geo.preview import preview_png
    from changekit.geo.scene import run_scene

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t1, t2, lab = out / "t1.tif", out / "t2.tif", out / "label.tif"
    # the generator of the demo's training data: the same distribution the demo model learnt
    write_geotiff_pair(t1, t2, lab, size=size, seed=seed)
    # fp32 unless asked otherwise: the demo's figures are the same on every CPU (auto would pick bf16 on some)
    kw: dict[str, Any] = dict(window=window, overlap=overlap, batch_size=batch_size, device=device, progress=progress,
                              precision="fp32")
    kw.update(scene_kwargs)
    if isinstance(model_ckpt, (str, Path)):
        summary = run_scene(t1, t2, out, ckpt=model_ckpt, **kw)
    else:
        summary = run_scene(t1, t2, out, model=model_ckpt, **kw)
    with rasterio.open(out / "change.tif") as c, rasterio.open(lab) as g:
        tp = fp = fn = 0
        for _, win in c.block_windows(1):
            p, y = c.read(1, window=win), g.read(1, window=win)
            ok = p != 255
            tp += int(((p == 1) & (y == 1) & ok).sum())
            fp += int(((p == 1) & (y == 0) & ok).sum())
            fn += int(((p == 0) & (y == 1) & ok).sum())
    summary["f1"] = 2 * tp / max(1, 2 * tp + fp + fn)
    summary["preview"] = str(preview_png(t2, out / "change.tif", out / "preview.png", label=lab))
    summary["inputs"] = {"t1": str(t1), "t2": str(t2), "label": str(lab)}
    return summary
