"""U-Net baselines (Corley et al. 2024): fusion designs, encoder weights from files and hub names, any band count.
Shapes, parameter counts, configs and learning are in the contract test."""

from __future__ import annotations

import pytest
import timm
import torch

import changekit
from changekit.checkpoints import CheckpointError
from changekit.models.summary import parameter_counts


def test_fusion_designs_match_their_definitions():
    torch.manual_seed(0)
    early = changekit.build_model("unet_r18_early").eval()
    siam = changekit.build_model("unet_r18_siam-diff").eval()
    assert early.net.encoder.model.conv1.weight.shape[1] == 6 and siam.net.encoder.model.conv1.weight.shape[1] == 3
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        # identical dates: every feature difference is zero, so the Siamese output does not depend on the image
        y = torch.randn(1, 3, 64, 64)
        assert torch.allclose(siam(x, x), siam(y, y), atol=1e-5) and not torch.allclose(siam(x, y), siam(x, x))
        # early fusion sees the dates as one stack: swapping them changes the input, so the output
        assert not torch.allclose(early(x, 2 * x), early(2 * x, x))
    # the published size: smp Unet(encoder resnet50, in_channels=6) = 32,530,658 (the paper's "U-Net")
    assert parameter_counts(changekit.build_model("unet_r50_early"))["params_total"] == 32_530_658


@pytest.mark.parametrize("prefix", ["", "model."])
def test_encoder_weights_from_a_resnet_file(tmp_path, prefix):
    ref = timm.create_model("resnet18", pretrained=False)
    torch.save({f"{prefix}{k}": v for k, v in ref.state_dict().items()}, tmp_path / "r18.pth")
    early = changekit.build_model("unet_r18_early", encoder_weights=str(tmp_path / "r18.pth"))
    enc = early.net.encoder.model
    assert torch.equal(enc.layer3[1].conv2.weight, ref.layer3[1].conv2.weight)
    # RGB filters widened to the 6 stacked bands: repeated and scaled by 3/6, so a grey image sees the same response
    w = ref.conv1.weight
    assert torch.allclose(enc.conv1.weight, torch.cat([w, w], 1) * 0.5)
    siam = changekit.build_model("unet_r18_siam-diff", encoder_weights=str(tmp_path / "r18.pth"))
    assert torch.equal(siam.net.encoder.model.conv1.weight, w)
    four = changekit.build_model("unet_r18_siam-diff", in_channels=4, encoder_weights=str(tmp_path / "r18.pth"))
    assert torch.allclose(four.net.encoder.model.conv1.weight[:, 3], w[:, 0] * 0.75)


def test_encoder_weights_by_name_and_wrong_files(tmp_path, monkeypatch):
    import changekit.models.unet as unet

    asked = []

    def fake_hub(spec):
        asked.append(spec)
        return timm.create_model("resnet50", pretrained=False).state_dict()

    monkeypatch.setattr(unet, "hub_state_dict", fake_hub)
    changekit.build_model("unet_r50_siam-diff", encoder_weights="imagenet")
    assert asked == ["timm:resnet50.tv_in1k"]  # torchvision's ImageNet weights, as the paper's smp encoders
    torch.save(timm.create_model("resnet50", pretrained=False).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(CheckpointError, match=r"r50\.pth does not fit .*shape mismatches"):
        changekit.build_model("unet_r18_early", encoder_weights=str(tmp_path / "r50.pth"))


def test_demo_trains_a_unet(tmp_path):
    from changekit.cli import main as cli

    assert cli(["demo", "--arch", "unet_r18_siam-diff", "--out", str(tmp_path / "d"), "--size", "32", "--n-train", "8",
                "--n-val", "2", "--n-test", "2", "--crop", "32", "--batch-size", "4", "--steps", "2",
                "--val-every", "2", "--threads", "1", "--no-progress", "--no-scene", "--figure-samples", "1"]) == 0
    import json

    m = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert m["recipe"]["arch"] == "unet_r18_siam-diff" and m["pixels"] == 2 * 32 * 32
    assert changekit.load_model(tmp_path / "d" / "model.ckpt").changekit_info["arch"] == "unet_r18_siam-diff"
