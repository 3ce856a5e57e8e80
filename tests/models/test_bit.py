"""BiT-R18 and the ResNet V1c backbone: open-cd golden, parameter counts, ImageNet weight import, learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from helpers.golden import assert_reproduces_golden, golden_state_dict, load_golden

import changekit
from changekit.checkpoints import CheckpointError
from changekit.errors import ChangekitError
from changekit.models.backbones import resnet as resnet_mod
from changekit.models.backbones.resnet import ResNetV1c, load_resnet_pretrained, resnet18_v1c
from changekit.models.bit import BITHead, CrossAttention, TransformerDecoder, TransformerEncoder


# --------------------------------------------------------------------------------------------- BiT
def test_registered_and_parameter_count():
    assert "bit_r18" in changekit.list_models()
    model = changekit.build_model("bit_r18")
    assert sum(p.numel() for p in model.parameters()) == 2_989_638
    assert sum(p.numel() for p in model.backbone.parameters()) == 2_802_016
    assert model.num_classes == 2 and model.in_channels == 3


def test_golden_open_cd_checkpoint(tmp_path):
    assert_reproduces_golden("bit_r18_256", "bit_r18", tmp_path)


@pytest.mark.parametrize(
    "change, key, fragment",
    [
        ("missing", "decode_head.decoder.7.norm1_.bias", "missing keys (1)"),
        ("extra", "backbone.layer4.0.conv1.weight", "unexpected keys (1)"),
        ("shape", "decode_head.enc_pos_embedding", "shape mismatches (1)"),
    ],
)
def test_strict_loading_names_the_key(tmp_path, change, key, fragment):
    sd = golden_state_dict(load_golden("bit_r18_256"))
    if change == "missing":
        del sd[key]
    elif change == "extra":
        sd[key] = torch.zeros(512, 256, 3, 3)
    else:
        sd[key] = torch.zeros(1, 10, 32)
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointError) as err:
        changekit.load_weights(changekit.build_model("bit_r18"), path)
    assert fragment in str(err.value) and key in str(err.value)


@pytest.mark.parametrize("size", [(64, 96), (60, 44)])
def test_output_at_input_resolution(size):
    model = changekit.build_model("bit_r18", num_classes=3, in_channels=4).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 4, *size), torch.randn(1, 4, *size))
    assert out.shape == (1, 3, *size)


def test_head_blocks_are_reusable():
    enc, dec = TransformerEncoder(32, 64, 8), TransformerDecoder(32, 64, 8)
    tokens, pixels = torch.randn(2, 8, 32), torch.randn(2, 100, 32)
    assert enc(tokens).shape == (2, 8, 32) and dec(pixels, tokens[:, :4]).shape == (2, 100, 32)
    attn = CrossAttention(32, 64, 8)
    assert attn.scale == pytest.approx(32**-0.5)
    head = BITHead(in_channels=64, use_tokenizer=False, pool_size=2, pool_mode="avg").eval()
    assert head(torch.randn(1, 64, 8, 8), torch.randn(1, 64, 8, 8)).shape == (1, 2, 64, 64)


def _synthetic_batch(n: int = 4, size: int = 32, seed: int = 0):
    """Date 2 = date 1 plus noise, with squares repainted; label = the repainted squares."""
    g = torch.Generator().manual_seed(seed)
    t1 = torch.randn(n, 3, size, size, generator=g)
    t2 = t1 + 0.1 * torch.randn(n, 3, size, size, generator=g)
    label = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        for _ in range(2):
            y, x = torch.randint(0, size - 12, (2,), generator=g).tolist()
            h, w = torch.randint(8, 12, (2,), generator=g).tolist()
            t2[i, :, y : y + h, x : x + w] = torch.randn(3, 1, 1, generator=g) * 2
            label[i, y : y + h, x : x + w] = 1
    return t1, t2, label


# --------------------------------------------------------------------------------------------- ResNet V1c
def test_resnet_v1c_layout_strides_and_dilations():
    net = ResNetV1c(
        depth=18, num_stages=4, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), contract_dilation=True
    )
    keys = net.state_dict().keys()
    assert {"stem.0.weight", "stem.1.running_var", "stem.3.weight", "stem.6.weight", "stem.7.bias"} <= keys
    assert {"layer1.0.conv1.weight", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.weight"} <= keys
    assert "layer1.0.downsample.0.weight" not in keys
    assert tuple(net.stem[0].weight.shape) == (32, 3, 3, 3) and net.stem[0].stride == (2, 2)
    # contract_dilation: first block of a dilated stage uses half the dilation
    assert net.layer3[0].conv1.dilation == (1, 1) and net.layer3[1].conv1.dilation == (2, 2)
    assert net.layer4[0].conv1.dilation == (2, 2) and net.layer4[1].conv1.dilation == (4, 4)
    outs = net.eval()(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 8, 8), (1, 512, 8, 8)]
    # stage-by-stage stepping gives the same result
    x = torch.randn(1, 3, 64, 64)
    y = x
    for i in range(4):
        y = net.forward_stage(i, y)
    assert torch.equal(y, net(x)[-1])


def _openmmlab_resnet18_v1c(seed: int = 0) -> dict[str, torch.Tensor]:
    """A small stand-in for resnet18_v1c-b5776b93.pth: every key and shape of the real file, incl. fc and layer4."""
    full = ResNetV1c(depth=18, num_stages=4, strides=(1, 2, 2, 2), dilations=(1, 1, 1, 1))
    g = torch.Generator().manual_seed(seed)
    sd = {
        k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v
        for k, v in full.state_dict().items()
    }
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}  # mmcv-era files lack them
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1000, 512, generator=g), torch.randn(1000, generator=g)
    return sd


def test_resnet_pretrained_every_key_lands(tmp_path):
    sd = _openmmlab_resnet18_v1c()
    path = tmp_path / "resnet18_v1c-b5776b93.pth"
    torch.save({"state_dict": sd, "meta": {"epoch": 100}}, path)
    net = ResNetV1c(depth=18, num_stages=3, strides=(1, 2, 1), dilations=(1, 1, 1), out_indices=(2,))
    _, dropped = load_resnet_pretrained(net, path)
    assert sorted(dropped) == sorted(k for k in sd if k.startswith(("fc.", "layer4.")))
    own = net.state_dict()
    for k, v in own.items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, sd[k]), k
    assert len(own) - sum(k.endswith("num_batches_tracked") for k in own) == len(sd) - len(dropped)

    # through the BiT factory, from a plain (un-nested) state dict file
    plain = tmp_path / "plain.pth"
    torch.save(sd, plain)
    model = changekit.build_model("bit_r18", backbone_weights=str(plain))
    assert torch.equal(model.backbone.layer3[1].conv2.weight, sd["layer3.1.conv2.weight"])
    assert torch.equal(model.backbone.stem[7].running_var, sd["stem.7.running_var"])


def test_resnet_pretrained_wrong_file_is_refused(tmp_path):
    sd = _openmmlab_resnet18_v1c()
    del sd["layer2.1.bn2.bias"]
    sd["stem.0.weight"] = torch.zeros(32, 4, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        resnet18_v1c(weights=path, num_stages=3, strides=(1, 2, 1), dilations=(1, 1, 1), out_indices=(2,))
    assert "layer2.1.bn2.bias" in str(err.value) and "stem.0.weight" in str(err.value)


def test_resnet_pretrained_by_hub_name(monkeypatch):
    """``open-mmlab://resnet18_v1c`` resolves to open-mmlab's URL, fetched through torch.hub (mocked: no network)."""
    calls = []

    def fake_download(url, **kwargs):
        calls.append(url)
        return {"state_dict": _openmmlab_resnet18_v1c(1)}

    monkeypatch.setattr(resnet_mod.torch.hub, "load_state_dict_from_url", fake_download)
    model = changekit.build_model("bit_r18", backbone_weights="imagenet")
    assert calls == ["https://download.openmmlab.com/pretrain/third_party/resnet18_v1c-b5776b93.pth"]
    assert torch.equal(model.backbone.stem[0].weight, _openmmlab_resnet18_v1c(1)["stem.0.weight"])
    with pytest.raises(ChangekitError, match="unknown pretrained name"):
        resnet18_v1c(weights="open-mmlab://resnet77_v1c")


def test_norm_layer_and_norm_eval():
    net = ResNetV1c(
        depth=18,
        num_stages=2,
        strides=(1, 2),
        dilations=(1, 1),
        out_indices=(1,),
        norm_layer=lambda c: nn.GroupNorm(8, c),
    )
    assert isinstance(net.stem[1], nn.GroupNorm) and isinstance(net.layer2[0].downsample[1], nn.GroupNorm)
    frozen = ResNetV1c(depth=18, num_stages=1, strides=(1,), dilations=(1,), out_indices=(0,), norm_eval=True)
    frozen.train()
    assert frozen.training and not frozen.stem[1].training


def test_resnet_pretrained_download_failure_is_a_clear_error(monkeypatch):
    def offline(url, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(resnet_mod.torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ChangekitError, match="download it by hand"):
        resnet18_v1c(weights="open-mmlab://resnet18_v1c")
