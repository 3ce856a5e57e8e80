"""DSQNet: the released heads against goldens made from the released code, the released checkpoint layout, any-size
forward of every variant, changekit's BMQ (dsqnet-cx) matching in both directions, OHEM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.golden import rule_tensor

from changekit import build_model
from changekit.checkpoints import CheckpointError, load_weights
from changekit.engine.losses import ChangeLoss, ohem_weights
from changekit.models.dsqnet.head_cx import BMQ

FIXTURES = Path(__file__).parents[1] / "fixtures" / "dsqnet"
TINY_SWIN = dict(embed_dim=12, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))
TINY_VITAE = dict(embed_dims=(8, 8, 16, 32), token_dims=(8, 16, 32, 64), NC_depth=(1, 1, 1, 1), NC_heads=(1, 2, 4, 8),
                  RC_heads=(1, 1, 2, 4), NC_group=(1, 4, 8, 16), RC_group=(1, 2, 4, 8))
#: released-build parameter counts (benchmarks/reference/dsqnet_golden.py prints them from the released code)
RELEASED_PARAMS = {"dsqnet_swin-t": 29_074_574, "dsqnet_vitaev2-s": 20_307_676,
                   "dsqnet-2408_swin-t": 27_757_284, "dsqnet-2408_vitaev2-s": 19_036_466}


def tiny(arch: str, **kw):
    args = TINY_SWIN if arch.endswith("swin-t") else TINY_VITAE
    width = {"dsqnet": 32, "dsqnet-2408": 64, "dsqnet-cx": 32}[arch.split("_")[0]]
    return build_model(arch, channels=width, drop_path_rate=0.0, backbone_args=args, **kw)


def released_golden(name: str) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Weights (released key layout, golden rule), inputs, released logits and parameter count of one fixture."""
    z = np.load(FIXTURES / f"{name}.npz")
    inputs = np.load(FIXTURES / f"dsqnet_inputs_{z['inputs']}.npz")
    sd = {k: rule_tensor(k, shape, dtype, int(z["seed"])) for k, shape, dtype in json.loads(str(z["keys"]))}
    t1, t2 = (torch.from_numpy(inputs[k]).float() for k in ("t1", "t2"))
    return sd, t1, t2, torch.from_numpy(z["logits"]), int(z["params"])


@pytest.mark.parametrize("name, arch", [
    ("dsqnet_swin-t_512", "dsqnet_swin-t"),
    ("dsqnet_vitaev2-s_512", "dsqnet_vitaev2-s"),
    ("dsqnet-2408_swin-t_512", "dsqnet-2408_swin-t"),
    ("dsqnet-2408_vitaev2-s_512", "dsqnet-2408_vitaev2-s"),
    ("dsqnet-2408_swin-t_256", "dsqnet-2408_swin-t"),  # the August upload exactly as written (it hard-codes 256)
])
def test_released_code_goldens(name, arch, tmp_path):
    sd, t1, t2, logits, params = released_golden(name)
    model = build_model(arch).eval()
    assert sum(p.numel() for p in model.parameters()) == params == RELEASED_PARAMS[arch]
    # a checkpoint as the released code writes it (mmengine: meta + state_dict + optimizer), loaded strictly
    path = tmp_path / "released.pth"
    torch.save({"meta": {"mmengine_version": "0.10.2", "iter": 80000}, "state_dict": sd, "optimizer": {}}, path)
    load_weights(model, path)
    with torch.no_grad():
        out = model.forward_decoder(t1, t2)
        full = model(t1, t2)
    assert (out - logits).abs().max() < 1e-4
    ref_full = torch.nn.functional.interpolate(logits, size=t1.shape[-2:], mode="bilinear", align_corners=False)
    assert (full - ref_full).abs().max() < 1e-4


def test_released_checkpoint_layout_is_strict(tmp_path):
    sd, *_ = released_golden("dsqnet_swin-t_512")
    path = tmp_path / "DSQNet_swin_levircd.pth"
    partial = {k: v for k, v in sd.items() if not k.startswith("decode_head.reference_area2")}
    torch.save({"state_dict": partial}, path)
    with pytest.raises(CheckpointError, match=r"DSQNet_swin_levircd\.pth.*missing keys \(1\).*reference_area2"):
        load_weights(build_model("dsqnet_swin-t"), path)
    # the August 2024 head and changekit's design do not take the May 2024 checkpoints
    torch.save({"state_dict": sd}, path)
    for arch in ("dsqnet-2408_swin-t", "dsqnet-cx_swin-t"):
        with pytest.raises(CheckpointError, match="does not fit model"):
            load_weights(build_model(arch), path)


def test_released_heads_as_written():
    """The quirks trained weights depend on: the ReLU before the box sigmoid (boxes ≥ 0.5 in every coordinate for
    the August head, whose boxes have no learned offset), zero-initialised sampling points, the `.view` that
    lays channels out as windows (August), the released ViTAE drop-path slicing."""
    torch.manual_seed(0)
    m = tiny("dsqnet-2408_swin-t").eval()
    t1, t2 = torch.randn(1, 3, 256, 256), torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        _, boxes = m.forward_decoder(t1, t2, return_boxes=True)
    assert tuple(boxes.shape) == (1, 32, 4) and bool((boxes >= 0.5).all())
    for head in (m.decode_head, tiny("dsqnet_swin-t").decode_head):
        assert head.point2[-1].weight.abs().sum() == 0 and head.point2[-1].bias.abs().sum() == 0
    # August BMQ: a box's samples land in *channel* k of every window row — permuting boxes permutes channels
    head = m.decode_head
    x = torch.randn(1, 32, 16, 16)
    xyxy = torch.tensor([[2.0, 2.0, 12.0, 12.0]]).repeat(1, 32, 1)
    xyxy[0, 5] = torch.tensor([0.0, 0.0, 4.0, 4.0])
    with torch.no_grad():
        r = head.sample(x, xyxy)  # (B, "c", "K", 64): axis 1 indexes boxes when c = K = 32
    assert torch.allclose(r[0, 4], r[0, 6]) and not torch.allclose(r[0, 4], r[0, 5])
    # ViTAE: the released per-stage slice start NC_depth[i-1] (stage 3 reuses rates of stages 1-2)
    vitae = build_model("dsqnet_vitaev2-s").backbone
    rates = [[float(getattr(c.drop_path, "drop_prob", 0.0)) for c in layer.NC] for layer in vitae.layers]
    dpr = torch.linspace(0, 0.3, 14).tolist()
    assert rates[2] == pytest.approx(dpr[2:10]) and rates[3] == pytest.approx(dpr[8:10])
    cx = build_model("dsqnet-cx_vitaev2-s").backbone
    assert [float(getattr(c.drop_path, "drop_prob", 0.0)) for c in cx.layers[3].NC] == pytest.approx(dpr[12:14])


@pytest.mark.parametrize("arch", ["dsqnet_swin-t", "dsqnet_vitaev2-s", "dsqnet-2408_vitaev2-s",
                                  "dsqnet-cx_swin-t", "dsqnet-cx_vitaev2-s"])
def test_forward_at_256_512_and_non_square(arch):
    m = tiny(arch).eval()
    for h, w in [(256, 256), (512, 512), (256, 384)]:
        t1, t2 = torch.randn(1, 3, h, w), torch.randn(1, 3, h, w)
        with torch.no_grad():
            dec = m.forward_decoder(t1, t2)
            full = m(t1, t2)
        assert tuple(dec.shape) == (1, 2, h // 4, w // 4)
        assert tuple(full.shape) == (1, 2, h, w)
        assert torch.isfinite(full).all()


def test_cx_boxes_and_sizes():
    m = tiny("dsqnet-cx_swin-t").eval()
    with torch.no_grad():
        _, boxes = m.forward_decoder(torch.randn(1, 3, 256, 384), torch.randn(1, 3, 256, 384), return_boxes=True)
    assert tuple(boxes.shape) == (1, 32, 4) and bool(((boxes > 0) & (boxes < 1)).all())
    swin, vitae = build_model("dsqnet-cx_swin-t"), build_model("dsqnet-cx_vitaev2-s")
    assert sum(p.numel() for p in swin.parameters()) == 28_513_844
    assert sum(p.numel() for p in vitae.parameters()) == 19_697_594


def test_bmq_matches_in_both_directions():
    torch.manual_seed(0)
    bmq = BMQ(c=16, channels=32).eval()
    x1, x2 = torch.randn(2, 16, 24, 32), torch.randn(2, 16, 24, 32)
    boxes = torch.rand(2, 32, 4) * 0.5 + 0.25
    with torch.no_grad():
        y1, y2 = bmq(x1, x2, boxes)
        assert not torch.allclose(y1, x1) and not torch.allclose(y2, x2)  # residuals are injected
        # only date 2 changes → date 1's refined features change (it receives date-2 content)
        y1b, _ = bmq(x1, x2 + torch.randn_like(x2), boxes)
        assert (y1b - y1).abs().max() > 1e-3
        # only date 1 changes → date 2's refined features change
        _, y2b = bmq(x1 + torch.randn_like(x1), x2, boxes)
        assert (y2b - y2).abs().max() > 1e-3
        # windows are tokens: re-ordering the boxes changes nothing (the released `.view` mixes windows/channels)
        perm = torch.randperm(32)
        p1, p2 = bmq(x1, x2, boxes[:, perm])
        assert torch.allclose(p1, y1, atol=1e-5) and torch.allclose(p2, y2, atol=1e-5)
        # content stays local: changing date 2 outside every box leaves date 1 untouched
        small = torch.tensor([0.25, 0.25, 0.2, 0.2]).expand(2, 32, 4)
        z1, _ = bmq(x1, x2, small)
        x2_far = x2.clone()
        x2_far[..., 14:, 18:] += 5.0
        z1b, _ = bmq(x1, x2_far, small)
        assert torch.allclose(z1, z1b, atol=1e-6)


def ohem_ce(logits, target, thresh, min_kept):
    """The engine's OHEM cross-entropy (the DSQNet configs' loss)."""
    return ChangeLoss({"ohem": {"thresh": thresh, "min_kept": min_kept}})(logits, target)[0]


def test_ohem_keeps_the_right_number_of_pixels():
    b, h, w = 2, 10, 10
    target = torch.zeros(b, h, w, dtype=torch.long)
    # true-class probability p = sigmoid(logit1 - logit0) with logit0 = 0 and target 1: distinct values in (0, 1)
    target[:] = 1
    p = torch.linspace(0.01, 0.99, b * h * w).view(b, h, w)
    logits = torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], 1)
    n_below = int((p < 0.7).sum())  # 140
    # min_kept per image (mmseg): 2 × 80 = 160 > 140 → exactly the 160 hardest
    assert int(ohem_weights(logits, target, 0.7, 80).sum()) == 160
    # min_kept smaller → every pixel under the threshold
    assert int(ohem_weights(logits, target, 0.7, 30).sum()) == n_below
    # ignored pixels are never kept; with fewer valid pixels than min_kept all but the easiest are kept
    target[0] = 255
    mask = ohem_weights(logits, target, 0.7, 100000)
    assert mask[0].sum() == 0 and int(mask[1].sum()) == h * w - 1
    # loss = kept CE summed / all pixels (mmseg mean over the whole weighted map)
    target[0] = 1
    mask = ohem_weights(logits, target, 0.7, 30)
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    assert torch.allclose(ohem_ce(logits, target, 0.7, 30), (ce * mask).sum() / (b * h * w))
    # lower-resolution logits are resized to the label first
    assert ohem_ce(logits[..., ::2, ::2], target, 0.7, 30).ndim == 0
