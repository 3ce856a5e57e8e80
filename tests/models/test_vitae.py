"""ViTAEv2 (window, no shift) backbone: any-size shapes, ViTAEv2-S size and names, release-format loading."""

from __future__ import annotations

import argparse

import pytest
import torch
from helpers.backbones import assert_four_stages

from changekit.checkpoints import CheckpointError
from changekit.models.backbones.vitae import ViTAEv2, load_vitae_pretrained, vitaev2_s

SMALL = dict(embed_dims=(8, 8, 16, 32), token_dims=(8, 16, 32, 64), NC_depth=(1, 1, 1, 1), NC_heads=(1, 2, 4, 8),
             RC_heads=(1, 1, 2, 4), NC_group=(1, 4, 8, 16), RC_group=(1, 2, 4, 8))


def small(**kw) -> ViTAEv2:
    return ViTAEv2(**SMALL, **kw).eval()


def test_four_nchw_stages_at_any_size():
    assert_four_stages(small(), 8, [(256, 384), (98, 130)])  # 256 and 512 run through DSQNet in test_dsqnet.py


def test_vitaev2_s_size_and_reference_names():
    m = vitaev2_s()
    # 18.85 M in the reference dense form, which also builds never-used norm0..3 (1,920) and relative-position
    # tables (1,352); without them:
    assert sum(p.numel() for p in m.parameters()) == 18_842_688
    assert m.out_channels == [64, 128, 256, 512]
    keys = m.state_dict().keys()
    for k in ("layers.0.RC.PRM.convs.3.0.weight", "layers.0.RC.PCM.6.weight", "layers.0.RC.attn.attn.qkv.weight",
              "layers.1.NC.1.attn.proj.bias", "layers.2.RC.attn.mlp.fc2.weight", "layers.2.NC.7.PCM.4.running_var",
              "layers.3.NC.1.norm2.weight"):
        assert k in keys
    assert "layers.2.RC.attn.attn.qkv.bias" not in keys  # global reduction cells have no qkv bias
    assert m.layers[0].NC[0].PCM[0].in_channels == 64 and m.layers[3].NC[0].PCM[0].groups == 128


def _release_checkpoint(m: ViTAEv2, seed: int = 3) -> dict:
    """A small ``ViTAEv2-S.pth.tar``-style file: timm training checkpoint with head, EMA and pickled args."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: (torch.randn(v.shape, generator=g) * 0.1 if v.is_floating_point() else v.clone())
          for k, v in m.state_dict().items()}
    c = m.out_channels[-1]
    sd["head.weight"], sd["head.bias"] = torch.randn(1000, c), torch.zeros(1000)
    for name, mod in m.named_modules():  # windows of the release carry (unused) relative-position tables
        if type(mod).__name__ == "WindowAttention":
            sd[f"{name}.relative_position_bias_table"] = torch.zeros(169, mod.num_heads)
            sd[f"{name}.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    return {"epoch": 299, "arch": "ViTAEv2_S", "state_dict": sd, "state_dict_ema": dict(sd),
            "args": argparse.Namespace(model="ViTAEv2_S", lr=1e-3), "metric": 82.6}


def test_release_format_loads_every_key(tmp_path):
    ckpt = _release_checkpoint(small())
    path = tmp_path / "ViTAEv2-S.pth.tar"
    torch.save(ckpt, path)
    m = small()
    report = load_vitae_pretrained(m, path)
    sd = ckpt["state_dict"]
    assert sorted(report["loaded"] + report["ignored"]) == sorted(sd)
    assert all(k.startswith("head.") or "relative_position" in k for k in report["ignored"])
    own = m.state_dict()
    assert sorted(report["loaded"]) == sorted(own)  # every model tensor was filled
    for k in report["loaded"]:
        assert torch.equal(own[k], sd[k]), k


def test_wrong_checkpoint_is_refused():
    sd = _release_checkpoint(small())["state_dict"]
    sd["layers.0.RC.PRM.convs.0.0.weight"] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(CheckpointError, match="shape"):
        load_vitae_pretrained(small(), sd)


def test_padding_only_touches_the_border():
    """A 64×64 input and the same input inside a 64×70 canvas give the same stage-1 features away from the pad."""
    m = small()
    x = torch.randn(1, 3, 64, 64)
    wide = torch.cat([x, torch.zeros(1, 3, 64, 6)], -1)
    with torch.no_grad():
        a, b = m(x)[0], m(wide)[0]
    # windows of 7 tokens: columns 0..13 lie in the first two windows of both maps, away from the padded edge
    assert torch.allclose(a[..., :, :7], b[..., :, :7], atol=1e-5)
