"""The model over the windows of a scene: windows read in a thread one batch ahead, normalised, run, and blended
strip by strip into the strip files (:mod:`changekit.geo.writers`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from changekit.atomic import write_json
from changekit.errors import ConfigError
from changekit.geo.inputs import SceneInputs
from changekit.geo.windows import Grid
from changekit.geo.writers import StripWriter

__all__ = ["Predictor", "strip_batches", "prefetched", "predict_strip"]


class Predictor:
    """Reads windows of every input image and runs the model on them; ``kind`` (the task's outputs) turns logits
    into the probabilities blended: the change probability (K=1), or one per class of a segmentation model."""

    def __init__(self, model: nn.Module, inputs: SceneInputs, scaling, mean, std, device: torch.device,
                 pad_multiple: int, kind, labeller=None, date_stats: list | None = None) -> None:
        self.model, self.inputs, self.device, self.pad = model, inputs, device, pad_multiple
        self.kind = kind
        self.labeller = labeller  # CLIPFormer: class lists per window from CLIP (--clip-per-window)
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

    def predict(self, batch: tuple[list, list, list]) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(probabilities float32 (K, h, w), valid bool (h, w))]`` for a batch from :meth:`read` (windows of equal
        size); windows without a valid pixel are not run."""
        windows, xs, valids = batch
        channels = self.kind.channels
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
        prob = self.kind.probabilities(self.model(*ts, **texts))
        return prob[..., :h, :w].float().cpu().numpy()


def strip_batches(grid: Grid, strips: Sequence[int], batch_size: int):
    """``((strip, columns), windows)`` for every batch of every strip, in the order they are predicted."""
    step = max(1, batch_size)
    for i in strips:
        for b0 in range(0, len(grid.cols), step):
            js = list(range(b0, min(len(grid.cols), b0 + step)))
            yield (i, js), [(grid.cols[j], grid.rows[i], grid.win_w, grid.win_h) for j in js]


def prefetched(items, read: Callable):
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


def predict_strip(grid: Grid, i: int, batches, predictor: Predictor, partial: Path,
                  tick: Callable[[], None]) -> None:
    """Blend strip ``i``'s windows (its batches are the next ones in ``batches``) and commit its strip file."""
    h, w = grid.win_h, grid.win_w
    cols, wx = grid.cols, grid.weights_x()
    channels = predictor.kind.channels
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
            for j, (prob, valid) in zip(js, predictor.predict(data)):
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
