"""A tiny change model trained on synthetic date series (:func:`changekit.data.synthetic.write_date_series`'s
world: red roofs built and demolished, seasons that are not change), for the timeline's learning test, its
benchmark and its docs figure. Plain PyTorch, one thread, about ten seconds."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from changekit.data.synthetic import date_series_buildings, render_series_date

MEAN, STD = [127.5] * 3, [64.0] * 3


class RoofOracle(torch.nn.Module):
    """Change where a red roof stands at one date and not the other (the series' roofs and nothing else are red):
    with it a timeline must find every date exactly."""

    num_classes = 2
    in_channels = 3

    def forward(self, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        roof = lambda x: (x[:, 0] > 200) & (x[:, 1] < 100)  # noqa: E731
        z = (roof(t1) != roof(t2)).float() * 20 - 10
        return torch.stack([torch.zeros_like(z), z], 1)


#: how the tests run the oracle (it sees stored uint8 values)
ORACLE_KW = dict(mean=[0, 0, 0], std=[1, 1, 1], input_range=[0, 255], window=32, overlap=8, batch_size=4,
                 progress=False)


def ddp_timeline_worker(rank: int, world_size: int, port: int, dates: list, out: str) -> None:
    """One rank of a 2-process (gloo, CPU) timeline with the oracle: each pair's strips are shared out."""
    import os

    from changekit.geo.timeline import run_timeline

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    run_timeline(dates, out, model=RoofOracle(), log=lambda *_: None, **ORACLE_KW)


def _series(seed: int, n: int, size: tuple[int, int]):
    buildings = date_series_buildings(n, size, seed)
    images = np.stack([render_series_date(buildings, d, n, size, seed) for d in range(1, n + 1)])
    present = np.zeros((n, *size), bool)
    for b in buildings:
        for d in range(1, n + 1):
            present[d - 1, b.y:b.y + b.h, b.x:b.x + b.w] = b.present(d)
    return images, present


def train_series_model(steps: int = 200, seeds=(10, 11, 12, 13), n: int = 6, size=(96, 128), crop: int = 64,
                       seed: int = 0) -> torch.nn.Module:
    """FC-Siam-diff (base 8) trained on random date pairs of a few series; ``changekit_info`` carries its
    normalisation (uint8 inputs)."""
    from changekit import build_model

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = [_series(s, n, size) for s in seeds]
    model = build_model("fc_siam_diff", base_channel=8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    for _ in range(steps):
        xs1, xs2, ys = [], [], []
        for _ in range(8):
            images, present = data[rng.integers(len(data))]
            i, j = sorted(rng.choice(n, 2, replace=False))
            y0, x0 = rng.integers(0, size[0] - crop + 1), rng.integers(0, size[1] - crop + 1)
            win = (slice(y0, y0 + crop), slice(x0, x0 + crop))
            xs1.append(images[i][win]), xs2.append(images[j][win])
            ys.append(present[i][win] != present[j][win])
        t1 = (torch.from_numpy(np.stack(xs1)).permute(0, 3, 1, 2).float() - mean) / std
        t2 = (torch.from_numpy(np.stack(xs2)).permute(0, 3, 1, 2).float() - mean) / std
        if rng.random() < 0.5:  # change has no direction
            t1, t2 = t2, t1
        loss = F.cross_entropy(model(t1, t2), torch.from_numpy(np.stack(ys)).long(),
                               weight=torch.tensor([1.0, 3.0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.changekit_info = {"mean": MEAN, "std": STD, "units": {"dtype": "uint8", "range": [0, 255]}}
    return model.eval()
