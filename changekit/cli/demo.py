"""``changekit demo``: synthetic data -> a trained model -> metrics, maps, figures and a scene: FC-Siam-diff on
change pairs (:func:`changekit.demo.run_demo`), or with ``--task segmentation`` MCAT-UNet on single-date land cover
(:func:`changekit.demo_segmentation.run_segmentation_demo`)."""

from __future__ import annotations

import argparse
import warnings

from changekit.cli._parser import Parser
from changekit.demo import DEFAULTS
from changekit.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="changekit demo", description=__doc__.split("\n\n")[0].replace("``", ""),
               epilog="Recipe values left out take the task's defaults (change: "
                      + ", ".join(f"{k} {v}" for k, v in DEFAULTS.items()) + ").")
    p.add_argument("--task", choices=["change", "segmentation"], default="change",
                   help="change (two dates, FC-Siam-diff; the default) or segmentation (one image, MCAT-UNet)")
    p.add_argument("--out", help="output folder (default outputs/demo, or outputs/demo-segmentation)")
    p.add_argument("--size", type=int, help="synthetic image size (px)")
    p.add_argument("--n-train", type=int)
    p.add_argument("--n-val", type=int)
    p.add_argument("--n-test", type=int, help="change task only (segmentation evaluates on val)")
    p.add_argument("--crop", type=int, help="training crop size (px)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--arch", help="the model to train (`changekit models`), e.g. unet_r18_early; the recipe is tuned "
                                  "for the default")
    p.add_argument("--steps", type=int, help="training iterations")
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup", type=int)
    p.add_argument("--dice", type=float, help="change task: Dice loss weight (CE weight is 1)")
    p.add_argument("--val-every", type=int, help="validate every N iterations")
    p.add_argument("--seed", type=int)
    p.add_argument("--max-minutes", type=float, default=None,
                   help="safety cap on training time (default 20): a run it cuts short says so; otherwise a seeded "
                        "demo gives the same figures every time")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default 1: robust on a busy machine; try 2+ on an idle one)")
    p.add_argument("--figure-samples", type=int, default=4)
    p.add_argument("--scene-size", type=int, nargs=2, metavar=("H", "W"),
                   help="size of the synthetic georeferenced scene run through `changekit scene` at the end "
                        "(default 1536 2048; segmentation 1024 1536)")
    p.add_argument("--no-scene", action="store_true", help="skip the large-scene step")
    p.add_argument("--no-real", action="store_true", help="change demo: skip the shipped Sentinel-2 model on real OSCD "
                                                          "pairs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*isinstance.*LeafSpec.*")
    common = dict(threads=args.threads, figure_samples=args.figure_samples,
                  scene=not args.no_scene, progress=not args.no_progress)
    if args.max_minutes is not None:
        common["max_minutes"] = args.max_minutes
    if args.scene_size:
        common["scene_size"] = tuple(args.scene_size)
    if args.task == "segmentation":
        from changekit.demo_segmentation import SEGMENTATION_DEFAULTS, run_segmentation_demo

        for flag in ("n_test", "dice"):
            if getattr(args, flag) is not None:
                raise ConfigError(f"--{flag.replace('_', '-')} is for the change demo; --task segmentation "
                                  "evaluates on val with cross-entropy (drop it)")
        recipe = {k: getattr(args, k) for k in SEGMENTATION_DEFAULTS if getattr(args, k) is not None}
        run_segmentation_demo(args.out or "outputs/demo-segmentation", **common, **recipe)
        return 0
    from changekit.demo import run_demo

    recipe = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None}
    run_demo(args.out or "outputs/demo", real=not args.no_real, **common, **recipe)
    return 0
