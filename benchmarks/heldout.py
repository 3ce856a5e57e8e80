"""Scores of a trained change model on held-out data: pooled change-class precision, recall, F1 and IoU over
every pixel of the chosen cities or pairs (one confusion matrix over the set, as `changekit test`), whole images,
the model's own decision threshold (`changekit export --threshold`; 0.5 otherwise), optionally test-time
augmentation. Also the unsupervised baseline: change-vector analysis with Otsu's threshold per image.

    .venv/bin/python benchmarks/heldout.py --model s2-urban-13band --preset oscd --root data/OSCD --split heldout
    .venv/bin/python benchmarks/heldout.py --model outputs/run/checkpoints/best.ckpt --preset sztaki --root ... --split test
    .venv/bin/python benchmarks/heldout.py --cva --preset oscd --root data/OSCD --split heldout [--band-names all]
    .venv/bin/python benchmarks/heldout.py --model A.ckpt --model B.ckpt ... --threshold T   # an ensemble

Several --model options score their ensemble: the mean of the models' change probabilities, each model reading the
data as it was trained (bands, normalisation), at --threshold (the mean of their own thresholds otherwise).

Prints one row per image and the pooled row; --json for machine-readable output. The OSCD held-out cities
(paris, bordeaux, pisa) are never used for training, checkpoint selection or thresholds.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def scores(mat: torch.Tensor) -> dict[str, float]:
    """Change-class precision, recall, F1 and IoU of a confusion matrix, as `changekit test` computes them
    (undefined values, e.g. precision with nothing predicted, count as 0)."""
    from changekit.metrics import metrics_from_confusion

    m = metrics_from_confusion(mat)
    return {k: float(np.nan_to_num(m[k])) for k in ("precision", "recall", "f1", "iou")}


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut maximising the between-class variance of a 1-D sample."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[int(np.argmax(between))])


def cva_map(t1: np.ndarray, t2: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Change-vector analysis: the per-pixel length of the difference of the (per-band standardised) dates,
    thresholded by Otsu over the image's valid pixels."""
    d = t2.astype(np.float64) - t1.astype(np.float64)
    both = np.concatenate([t1[valid], t2[valid]]).astype(np.float64)
    mag = np.sqrt((((d - 0) / (both.std(0) + 1e-9)) ** 2).sum(-1))
    return mag >= otsu(mag[valid])


@torch.no_grad()
def probability(model: torch.nn.Module, t1: torch.Tensor, t2: torch.Tensor, tta: bool) -> torch.Tensor:
    """Change probability (H, W) of one whole image pair (normalised CHW tensors), padded to a multiple of 32."""
    h, w = t1.shape[-2:]
    ph, pw = math.ceil(h / 32) * 32 - h, math.ceil(w / 32) * 32 - w
    x1 = F.pad(t1[None], (0, pw, 0, ph), mode="reflect")
    x2 = F.pad(t2[None], (0, pw, 0, ph), mode="reflect")
    views = [(lambda x: x, lambda x: x)]
    if tta:  # the four flips; each prediction is flipped back before averaging
        views += [(lambda x, d=d: torch.flip(x, d), lambda x, d=d: torch.flip(x, d)) for d in ((-1,), (-2,), (-1, -2))]
    prob = 0
    for fwd, back in views:
        prob = prob + back(model(fwd(x1), fwd(x2)).softmax(1))[:, 1]
    return (prob / len(views))[0, :h, :w]


def load_member(name: str, precision: str) -> tuple[torch.nn.Module, float, dict[str, Any]]:
    """A model, its own decision threshold and the dataset arguments that read data as it was trained."""
    import changekit
    from changekit.data.transforms import build_transforms

    model = changekit.load_model(name)
    info = model.changekit_info
    kw: dict[str, Any] = {"in_channels": info["in_channels"],
                          "transforms": build_transforms(train=False, mean=info["mean"], std=info["std"],
                                                         size_divisor=None)}
    names = (info.get("units") or {}).get("band_names")
    if names:
        kw["band_names"] = names
    if info.get("standardize"):
        kw["standardize"] = info["standardize"]
    return changekit.optimize_for_inference(model, precision), float(info.get("threshold") or 0.5), kw


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append",
                   help="a shipped model name, a .safetensors file or a changekit checkpoint; repeat it to score "
                        "the ensemble (mean probability)")
    p.add_argument("--cva", action="store_true", help="the unsupervised baseline instead of a model")
    p.add_argument("--preset", required=True, help="dataset preset (oscd, sztaki, ...)")
    p.add_argument("--root", required=True)
    p.add_argument("--split", required=True, help="e.g. heldout (OSCD), test (SZTAKI), or a list of cities")
    p.add_argument("--band-names", help="OSCD bands for --cva (default: the model's, else all)")
    p.add_argument("--threshold", type=float,
                   help="override the model's decision threshold (an ensemble's default: the mean of its models')")
    p.add_argument("--tta", action="store_true", help="average the four flips")
    p.add_argument("--precision", default="fp32",
                   help="run the model through optimize_for_inference in this precision (fp32, bf16, int8, auto): "
                        "how far a reduced precision moves F1 on real data")
    p.add_argument("--sweep", action="store_true",
                   help="also print pooled F1 at thresholds 0.05..0.95 and the best (run on VALIDATION data only: "
                        "that is how a shipped model's threshold is chosen)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from changekit.data.presets import build_dataset
    from changekit.data.transforms import build_transforms
    from changekit.metrics import confusion_matrix

    if not args.model and not args.cva:
        p.error("give --model or --cva")
    members = [load_member(m, args.precision) for m in args.model or []]
    threshold = args.threshold or (float(np.mean([t for _, t, _ in members])) if members else 0.5)
    if members:
        datasets = [build_dataset(args.preset, args.root, args.split, **kw) for _, _, kw in members]
    else:
        kw = {"transforms": build_transforms(train=False, mean=None, size_divisor=None)}
        if args.band_names:
            kw["band_names"] = args.band_names
        datasets = [build_dataset(args.preset, args.root, args.split, **kw)]

    rows, total = [], torch.zeros(2, 2, dtype=torch.long)
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    sweep = torch.zeros(len(grid), 2, 2, dtype=torch.long)
    for i in range(len(datasets[0])):
        items = [ds[i] for ds in datasets]
        item, label = items[0], items[0]["label"]  # 0/1, 255 ignored
        if members:
            prob = sum(probability(m, it["t1"], it["t2"], args.tta) for (m, _, _), it in zip(members, items))
            prob = prob / len(members)
            pred = prob >= threshold
            for k, t in enumerate(grid):
                sweep[k] += confusion_matrix((prob >= t).long(), label, 2)
        else:
            t1 = item["t1"].permute(1, 2, 0).numpy()
            t2 = item["t2"].permute(1, 2, 0).numpy()
            pred = torch.from_numpy(cva_map(t1, t2, label.numpy() != 255))
        mat = confusion_matrix(pred.long(), label, 2)
        total += mat
        rows.append({"name": item["name"], **scores(mat)})
    name = " + ".join(args.model) if members else "cva+otsu"
    result = {"model": name, "split": args.split, "threshold": threshold if members else None,
              "precision": members[0][0].precision if members else None, "tta": args.tta, "images": rows,
              "pooled": scores(total)}
    if args.sweep and members:
        f1s = [scores(c)["f1"] for c in sweep]
        result["sweep"] = {f"{t:.2f}": f for t, f in zip(grid, f1s)}
        result["best_threshold"] = float(grid[int(np.argmax(f1s))])
    if args.json:
        print(json.dumps(result))
    else:
        if members:
            print(f"precision {result['precision']}, threshold {threshold:.2f}")
        for r in rows + [{"name": "pooled", **result["pooled"]}]:
            print(f"{r['name']:<20} F1 {100 * r['f1']:5.1f}  IoU {100 * r['iou']:5.1f}  P {100 * r['precision']:5.1f}  "
                  f"R {100 * r['recall']:5.1f}")
        if "sweep" in result:
            print("threshold sweep (pooled F1): " + ", ".join(f"{t} {100 * f:.1f}" for t, f in result["sweep"].items()))
            print(f"best threshold {result['best_threshold']:.2f}")
    return result


if __name__ == "__main__":
    main()
