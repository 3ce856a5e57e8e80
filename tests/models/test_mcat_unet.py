"""MCAT-UNet (SegNeXt MSCAN-S + CSHeadUNet): goldens from the released code, counts, weights, learning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.golden import rule_tensor

import changekit
from changekit.models.backbones.mscan import load_mscan_pretrained, mscan
from changekit.models.summary import count_flops, parameter_counts

FIX = Path(__file__).parents[1] / "fixtures" / "mcat_unet"


def _golden(size: int):
    d = np.load(FIX / f"mcat-unet_segnext-s_{size}.npz")
    keys = json.loads(str(d["keys"]))
    sd = {k: rule_tensor(k, shape, dtype, int(d["seed"])) for k, shape, dtype in keys}
    return d, sd


@pytest.mark.parametrize("size", [256, 512])
def test_golden_released_code(size):
    """The released mmseg model (decode head, auxiliary head, resized logits) under the golden weight rule."""
    d, sd = _golden(size)
    model = changekit.build_model("mcat-unet_segnext-s", num_classes=6).eval()
    changekit.load_weights(model, sd)  # the released key layout loads strictly, as is
    x = torch.from_numpy(d["x"]).float()
    with torch.no_grad():
        out = model.forward_all(x)
        full = model(x)
    assert (out["seg"] - torch.from_numpy(d["logits"])).abs().max() <= 1e-4
    assert (out["aux"] - torch.from_numpy(d["aux"])).abs().max() <= 1e-4
    if "logits_full" in d:
        assert (full - torch.from_numpy(d["logits_full"])).abs().max() <= 1e-4
    assert full.shape[-2:] == (size, size)
    assert parameter_counts(model)["params_total"] == int(d["params"])


def test_counts_match_the_paper_within_5_percent():
    """23.2 M parameters, 18.5 GFLOPs at 512² (the seed's table); ours: the released build."""
    model = changekit.build_model("mcat-unet_segnext-s", num_classes=6)
    total = parameter_counts(model)["params_total"]
    flops = count_flops(model, (512, 512))[0]
    assert total == 22_913_292 and abs(total / 23.2e6 - 1) < 0.05
    assert abs(flops / 18.5e9 - 1) < 0.05
    # dead released modules are frozen (never in the forward), everything else trains
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(".local1." in n or ".local2." in n or n.startswith("decode_head.convs.1.") for n in frozen)


def test_mscan_imagenet_file_loads_strictly(tmp_path):
    ref = mscan("s")
    sd = {f"backbone.{k}": v.clone() for k, v in ref.state_dict().items()}
    sd["head.weight"] = torch.zeros(1000, 512)  # the ImageNet classifier is dropped
    torch.save({"state_dict": sd}, tmp_path / "mscan_s.pth")
    model = changekit.build_model("mcat-unet_segnext-s", backbone_weights=str(tmp_path / "mscan_s.pth"))
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in ref.state_dict().items())
    del sd["backbone.norm4.weight"]
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(changekit.checkpoints.CheckpointError, match="missing keys .*norm4.weight"):
        load_mscan_pretrained(mscan("s"), tmp_path / "broken.pth")


def test_any_size_and_tiny_learning():
    torch.manual_seed(0)
    model = changekit.build_model("mcat-unet_segnext-s", num_classes=3, drop_path_rate=0.0)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 96)).shape == (1, 3, 64, 96)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 64, 64, generator=g)
    y = torch.zeros(2, 64, 64, dtype=torch.long)
    y[:, 16:48, 8:40] = 1
    y[:, 40:, 44:] = 2
    x[:, 0][y == 1] += 2.0
    x[:, 1][y == 2] += 2.0
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    losses = []
    for _ in range(12):
        out = model.forward_all(x)
        loss = F.cross_entropy(F.interpolate(out["seg"], size=(64, 64), mode="bilinear"), y) + 0.4 * F.cross_entropy(
            F.interpolate(out["aux"], size=(64, 64), mode="bilinear"), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
