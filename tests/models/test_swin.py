"""Swin backbone: any-size shapes, agreement with timm where the two coincide, official / mmseg weight formats."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers.backbones import assert_four_stages

from changekit.checkpoints import CheckpointError
from changekit.models.backbones.swin import SwinTransformer, load_swin_pretrained, swin_tiny

SMALL = dict(embed_dim=12, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7, drop_path_rate=0.0)


def small() -> SwinTransformer:
    return SwinTransformer(**SMALL).eval()


def test_four_nchw_stages_at_any_size():
    assert_four_stages(small(), 12, [(256, 384), (100, 130)])  # 256 and 512 run through DSQNet in test_dsqnet.py


def test_swin_tiny_size_and_names():
    m = swin_tiny()
    assert sum(p.numel() for p in m.parameters()) == 27_520_698
    assert m.out_channels == [96, 192, 384, 768]
    keys = m.state_dict().keys()
    for k in ("patch_embed.proj.weight", "layers.0.blocks.1.attn.qkv.weight", "layers.2.downsample.reduction.weight",
              "layers.0.blocks.0.attn.relative_position_bias_table", "norm0.weight", "norm3.bias"):
        assert k in keys


def _official_state_dict(m: SwinTransformer, seed: int = 1) -> dict[str, torch.Tensor]:
    """A small checkpoint in Microsoft's release layout: no norm0..3, a final ``norm``, a ``head``, attn masks."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: (torch.randn(v.shape, generator=g) * 0.1 if v.is_floating_point() else v.clone())
          for k, v in m.state_dict().items() if not k.startswith("norm")}
    c = m.num_features[-1]
    sd.update({"norm.weight": torch.ones(c), "norm.bias": torch.zeros(c), "head.weight": torch.randn(10, c),
               "head.bias": torch.zeros(10), "layers.0.blocks.1.attn_mask": torch.zeros(64, 49, 49)})
    return sd


def _to_mmseg(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmseg's swin2mmseg conversion (renames + nn.Unfold order of the patch-merging weights)."""

    def red(x):
        o, i = x.shape
        return x.reshape(o, 4, i // 4)[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(o, i)

    def nrm(x):
        (i,) = x.shape
        return x.reshape(4, i // 4)[[0, 2, 1, 3], :].transpose(0, 1).reshape(i)

    out = {}
    for k, v in sd.items():
        if k.startswith("head"):
            continue
        if k.startswith("layers"):
            nk = k.replace("attn.", "attn.w_msa.").replace("mlp.fc1.", "ffn.layers.0.0.").replace("mlp.fc2.", "ffn.layers.1.")
            if "downsample.reduction" in k:
                v = red(v)
            elif "downsample.norm" in k:
                v = nrm(v)
            nk = nk.replace("layers", "stages", 1)
        elif k.startswith("patch_embed"):
            nk = k.replace("proj", "projection")
        else:
            nk = k
        out[nk] = v
    return out


def test_official_and_mmseg_formats_load_every_key(tmp_path):
    ref = small()
    official = _official_state_dict(ref)
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save({"model": official}, path)
    a = small()
    report = load_swin_pretrained(a, path)
    assert sorted(report["loaded"] + report["ignored"]) == sorted(official)  # every key landed or is a known extra
    assert set(report["ignored"]) == {"norm.weight", "norm.bias", "head.weight", "head.bias", "layers.0.blocks.1.attn_mask"}
    assert set(report["missing"]) == {f"norm{i}.{p}" for i in range(4) for p in ("weight", "bias")}
    for k in report["loaded"]:
        assert torch.equal(a.state_dict()[k], official[k]), k

    mm = tmp_path / "swin_tiny_patch4_window7_224_20220317-1cdeb081.pth"
    torch.save({"meta": {}, "state_dict": _to_mmseg(official)}, mm)
    b = small()
    load_swin_pretrained(b, mm)
    for k in report["loaded"]:
        assert torch.equal(b.state_dict()[k], a.state_dict()[k]), k  # includes the re-ordered patch merging
    x = torch.randn(1, 3, 36, 60)
    with torch.no_grad():
        assert all(torch.equal(p, q) for p, q in zip(a(x), b(x)))

    # prefixed whole-model (open-cd) layout
    c = small()
    load_swin_pretrained(c, {f"backbone.{k}": v for k, v in _to_mmseg(official).items()})
    assert torch.equal(c.state_dict()["layers.1.downsample.norm.weight"], a.state_dict()["layers.1.downsample.norm.weight"])


def test_wrong_checkpoint_is_refused():
    sd = _official_state_dict(small())
    del sd["layers.0.blocks.0.attn.qkv.weight"]
    with pytest.raises(CheckpointError, match="missing"):
        load_swin_pretrained(small(), sd)


def test_matches_timm_where_windows_tile_exactly():
    """At 224 (56/28/14 maps: window multiples) the dense Swin computes what timm's classification Swin does."""
    timm = pytest.importorskip("timm")
    from timm.models.swin_transformer import checkpoint_filter_fn

    ours = small()
    ref = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=10, embed_dim=12,
                            depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)).eval()
    ref.load_state_dict(checkpoint_filter_fn({"model": _official_state_dict(ours)}, ref))
    load_swin_pretrained(ours, _official_state_dict(ours))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        inter = ref.forward_intermediates(x, indices=4, intermediates_only=True, norm=False)
        outs = ours(x)
    for i in range(3):  # stage 4 (7×7) differs by design: timm drops the shift when the map equals the window
        expect = F.layer_norm(inter[i].permute(0, 2, 3, 1), (inter[i].shape[1],)).permute(0, 3, 1, 2)
        assert torch.allclose(outs[i], expect, atol=1e-4), i
