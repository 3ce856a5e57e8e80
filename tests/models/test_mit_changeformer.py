"""MiT backbone and open-cd ChangeFormer: golden output, parameter counts, stage stepping, pretrained formats, learning."""

from __future__ import annotations

import pytest
import torch
from helpers.golden import assert_reproduces_golden

import changekit
from changekit.errors import ChangekitError
from changekit.models.backbones import mit as mit_mod
from changekit.models.backbones.mit import MIT_PRETRAINED_URLS, MixVisionTransformer, mit


# --------------------------------------------------------------------------------------------- ChangeFormer
def test_golden_open_cd_checkpoint(tmp_path):
    model, g = assert_reproduces_golden("changeformer_mit-b0_256", "changeformer_mit-b0", tmp_path)
    assert list(model.state_dict()) == [k for k, _, _ in g["keys"]]  # open-cd's layout and order
    assert g["logits"].shape == (1, 2, 64, 64)  # SegFormer head: 1/4 resolution


@pytest.mark.parametrize(
    "name, expected", [("changeformer_mit-b0", 3_846_754), ("changeformer_mit-b1", 13_940_930)]
)
def test_parameter_counts(name, expected):
    model = changekit.build_model(name)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.num_classes == 2 and model.in_channels == 3


def test_other_bands_classes_and_sizes():
    model = changekit.build_model("changeformer_mit-b0", in_channels=4, num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 4, 70, 45), torch.randn(1, 4, 70, 45))  # not a multiple of 32
    assert out.shape == (1, 3, 70, 45)


# --------------------------------------------------------------------------------------------- MiT
def _tiny_mit(**kw) -> MixVisionTransformer:
    return MixVisionTransformer(embed_dims=8, num_layers=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), **kw)


def test_mit_b0_stages_and_stepping():
    net = mit("b0").eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outs = net(x)
        assert [tuple(o.shape) for o in outs] == [
            (1, 32, 16, 24),
            (1, 64, 8, 12),
            (1, 160, 4, 6),
            (1, 256, 2, 3),
        ]
        y, stepped = x, []
        for i in range(net.num_stages):
            y = net.forward_stage(i, y)
            stepped.append(y)
    for a, b in zip(outs, stepped):
        assert torch.equal(a, b)
    assert net.out_channels == [32, 64, 160, 256]


def test_stepping_lets_a_caller_modify_a_stage():
    net = _tiny_mit().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        s0 = net.forward_stage(0, x)
        plain = net.forward_stage(1, s0)
        modified = net.forward_stage(1, s0 + 1.0)
    assert plain.shape == modified.shape and not torch.allclose(plain, modified)


def test_mit_drop_path_only_in_training():
    net = _tiny_mit(drop_path_rate=0.5)
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x)[-1], net(x)[-1])
    net.train()
    torch.manual_seed(1)
    a = net(x)[-1]
    torch.manual_seed(2)
    assert not torch.allclose(a, net(x)[-1])


# --------------------------------------------------------------------------------------------- pretrained files
def _random_like(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=g) for k, v in sd.items()}


def _to_nvlabs(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Write an mmseg-layout MiT state dict in NVlabs SegFormer's ``mit_bX.pth`` layout (the inverse mapping)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        parts = k.split(".")
        s = int(parts[1]) + 1
        if parts[2] == "0":
            out[f"patch_embed{s}.{parts[3].replace('projection', 'proj')}.{parts[4]}"] = v
        elif parts[2] == "2":
            out[f"norm{s}.{parts[3]}"] = v
        else:
            j, rest = parts[3], ".".join(parts[4:])
            pre = f"block{s}.{j}."
            if rest.startswith("attn.attn.in_proj_"):
                kind = rest.rsplit("_", 1)[1]
                c = v.shape[0] // 3
                out[pre + f"attn.q.{kind}"] = v[:c].clone()
                out[pre + f"attn.kv.{kind}"] = v[c:].clone()
            elif rest.startswith("attn.attn.out_proj."):
                out[pre + "attn.proj." + parts[-1]] = v
            elif rest.startswith("ffn.layers."):
                idx, kind = parts[-2], parts[-1]
                name = {"0": "fc1", "1": "dwconv.dwconv", "4": "fc2"}[idx]
                out[pre + f"mlp.{name}.{kind}"] = v[:, :, 0, 0] if idx in "04" and kind == "weight" else v
            else:
                out[pre + rest] = v
    out["head.weight"] = torch.randn(1000, 256)
    out["head.bias"] = torch.randn(1000)
    return out


@pytest.mark.parametrize("layout", ["mmseg", "nvlabs", "opencd"])
def test_pretrained_files_land_every_key(tmp_path, layout):
    ref = _random_like(mit("b0").state_dict())
    if layout == "mmseg":  # mit_b0_20220624-7e0fe6dd.pth: {'state_dict': ...} in mmseg keys
        obj = {"state_dict": ref, "meta": {}}
    elif layout == "nvlabs":  # mit_b0.pth: plain dict in NVlabs keys, with the ImageNet head
        obj = _to_nvlabs(ref)
        assert "block1.0.attn.kv.weight" in obj and obj["block1.0.mlp.fc1.weight"].ndim == 2
    else:  # a whole open-cd ChangeFormer checkpoint: its backbone.* part is used
        obj = {
            "state_dict": {
                **{f"backbone.{k}": v for k, v in ref.items()},
                "decode_head.conv_seg.bias": torch.zeros(2),
            }
        }
    path = tmp_path / f"mit_b0_{layout}.pth"
    torch.save(obj, path)
    net = mit("b0", weights=path)
    got = net.state_dict()
    assert got.keys() == ref.keys()
    for k, v in ref.items():
        assert torch.equal(got[k], v), k
    # ChangeFormer passes it to its encoder
    model = changekit.build_model("changeformer_mit-b0", backbone_weights=str(path))
    assert torch.equal(
        model.backbone.layers[0][1][0].attn.attn.in_proj_weight, ref["layers.0.1.0.attn.attn.in_proj_weight"]
    )


def test_pretrained_by_name_uses_the_mmseg_url(monkeypatch):
    ref = _random_like(mit("b1").state_dict())
    asked = []

    def fake_download(url, **kwargs):
        asked.append(url)
        return {"state_dict": ref}

    monkeypatch.setattr(mit_mod.torch.hub, "load_state_dict_from_url", fake_download)
    net = mit("b1", weights="imagenet")
    assert asked == [MIT_PRETRAINED_URLS["b1"]] and asked[0].endswith("mit_b1_20220624-02e5a6a1.pth")
    assert torch.equal(net.layers[3][2].weight, ref["layers.3.2.weight"])


def test_pretrained_mismatch_is_reported(tmp_path):
    path = tmp_path / "mit_b1.pth"
    torch.save(mit("b1").state_dict(), path)
    with pytest.raises(ChangekitError, match="shape mismatches"):
        mit("b0", weights=path)


# --------------------------------------------------------------------------------------------- learning
