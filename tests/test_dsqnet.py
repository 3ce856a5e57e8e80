"""DSQNet: any-size forward for both backbones, published sizes, BMQ matching in both directions, OHEM, learning."""

from __future__ import annotations

import pytest
import torch

from changekit import build_model
from changekit.engine.losses import ChangeLoss, ohem_weights
from changekit.models.dsqnet.heads import BMQ

TINY_SWIN = dict(embed_dim=12, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))
TINY_VITAE = dict(embed_dims=(8, 8, 16, 32), token_dims=(8, 16, 32, 64), NC_depth=(1, 1, 1, 1), NC_heads=(1, 2, 4, 8),
                  RC_heads=(1, 1, 2, 4), NC_group=(1, 4, 8, 16), RC_group=(1, 2, 4, 8))


def tiny(arch: str, **kw):
    args = TINY_SWIN if arch == "dsqnet_swin-t" else TINY_VITAE
    return build_model(arch, channels=32, drop_path_rate=0.0, backbone_args=args, **kw)


@pytest.mark.parametrize("arch", ["dsqnet_swin-t", "dsqnet_vitaev2-s"])
def test_forward_at_256_512_and_non_square(arch):
    m = tiny(arch).eval()
    for h, w in [(256, 256), (512, 512), (256, 384)]:
        t1, t2 = torch.randn(1, 3, h, w), torch.randn(1, 3, h, w)
        with torch.no_grad():
            dec, boxes = m.forward_decoder(t1, t2, return_boxes=True)
            full = m(t1, t2)
        assert tuple(dec.shape) == (1, 2, h // 4, w // 4)
        assert tuple(full.shape) == (1, 2, h, w)
        assert tuple(boxes.shape) == (1, 32, 4) and bool(((boxes > 0) & (boxes < 1)).all())


def test_published_sizes():
    swin = build_model("dsqnet_swin-t")
    vitae = build_model("dsqnet_vitaev2-s")
    n_swin = sum(p.numel() for p in swin.parameters())
    n_vitae = sum(p.numel() for p in vitae.parameters())
    assert n_swin == 28_513_844 and n_vitae == 19_697_594
    assert abs(n_swin / 29.5e6 - 1) < 0.05 and abs(n_vitae / 19.8e6 - 1) < 0.05
    assert swin.num_classes == 2 and swin.in_channels == 3


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
