"""``changekit demo``: synthetic data -> trained FC-Siam-diff -> metrics, maps, figures and a scene
(:func:`changekit.demo.run_demo`)."""

from __future__ import annotations

import argparse
import warnings

from changekit.demo import DEFAULTS


def _parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    p = argparse.ArgumentParser(prog="changekit demo", description=__doc__.split("\n\n")[0].strip("`"),
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="outputs/demo", help="output folder")
    p.add_argument("--size", type=int, default=d["size"], help="synthetic image size (px)")
    p.add_argument("--n-train", type=int, default=d["n_train"])
    p.add_argument("--n-val", type=int, default=d["n_val"])
    p.add_argument("--n-test", type=int, default=d["n_test"])
    p.add_argument("--crop", type=int, default=d["crop"], help="training crop size (px)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--arch", default=d["arch"],
                   help="the model to train (`changekit models`), e.g. unet_r18_early; the recipe is tuned for the default")
    p.add_argument("--steps", type=int, default=d["steps"], help="training iterations")
    p.add_argument("--lr", type=float, default=d["lr"])
    p.add_argument("--warmup", type=int, default=d["warmup"])
    p.add_argument("--dice", type=float, default=d["dice"], help="Dice loss weight (CE weight is 1)")
    p.add_argument("--val-every", type=int, default=d["val_every"], help="validate every N iterations")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--max-minutes", type=float, default=4.0, help="stop training after this long (safety cap)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default 1: robust on a busy machine; try 2+ on an idle one)")
    p.add_argument("--figure-samples", type=int, default=4)
    p.add_argument("--scene-size", type=int, nargs=2, default=(1536, 2048), metavar=("H", "W"),
                   help="size of the synthetic georeferenced scene run through `changekit scene` at the end")
    p.add_argument("--no-scene", action="store_true", help="skip the large-scene step")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from changekit.demo import run_demo

    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*isinstance.*LeafSpec.*")
    recipe = {k: getattr(args, k) for k in DEFAULTS}
    run_demo(args.out, threads=args.threads, max_minutes=args.max_minutes, figure_samples=args.figure_samples,
             scene_size=tuple(args.scene_size), scene=not args.no_scene, progress=not args.no_progress, **recipe)
    return 0
