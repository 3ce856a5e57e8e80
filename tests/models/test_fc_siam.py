"""FC-Siam-diff, FC-EF and FC-Siam-conc: open-cd golden outputs, parameter counts, strict loading, any input size,
learning."""

from __future__ import annotations

import pytest
import torch
from helpers.golden import assert_reproduces_golden, golden_state_dict, load_golden

import changekit
from changekit.checkpoints import CheckpointError


def test_registered_and_parameter_count():
    assert "fc_siam_diff" in changekit.list_models()
    model = changekit.build_model("fc_siam_diff")
    assert sum(p.numel() for p in model.parameters()) == 1_352_210
    assert model.num_classes == 2 and model.in_channels == 3


def test_golden_open_cd_checkpoint(tmp_path):
    assert_reproduces_golden("fc_siam_diff_256", "fc_siam_diff", tmp_path)


@pytest.mark.parametrize("arch, params", [("fc_ef", 1_352_642), ("fc_siam_conc", 1_548_050)])
def test_other_two_of_the_family_match_open_cd(arch, params, tmp_path):
    # goldens from open-cd's fcsn.py (benchmarks/reference/fc_golden.py); the paper gives 1.35 M and 1.55 M
    model, _ = assert_reproduces_golden(f"{arch}_64", arch, tmp_path)
    assert sum(p.numel() for p in model.parameters()) == params


def test_inference_folds_the_batch_norms_and_still_reproduces_the_golden(tmp_path):
    """optimize_for_inference folds the 19 BNs into their (transposed) convolutions and runs channels-last: the
    open-cd golden logits (trained BN statistics) still come out, to fp32 rounding."""
    model, g = assert_reproduces_golden("fc_siam_diff_256", "fc_siam_diff", tmp_path)
    fast = changekit.optimize_for_inference(model, "fp32")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert not any(k.startswith("backbone.bn") for k in model.state_dict())
    assert (fast(g["t1"], g["t2"]) - g["logits_full"]).abs().max().item() <= 1e-4
    assert model.fuse_for_inference() == 0  # a second call finds nothing left to fold


@pytest.mark.parametrize(
    "change, fragment",
    [
        ("missing", "missing keys (1)"),
        ("extra", "unexpected keys (1)"),
        ("shape", "shape mismatches (1)"),
    ],
)
def test_strict_loading_names_the_key(tmp_path, change, fragment):
    sd = golden_state_dict(load_golden("fc_siam_diff_256"))
    if change == "missing":
        key = "backbone.bn33d.running_var"
        del sd[key]
    elif change == "extra":
        key = "backbone.conv44.weight"
        sd[key] = torch.zeros(1)
    else:
        key = "decode_head.conv_seg.weight"
        sd[key] = torch.zeros(3, 16, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": sd}, path)
    model = changekit.build_model("fc_siam_diff")
    with pytest.raises(CheckpointError) as err:
        changekit.load_weights(model, path)
    assert fragment in str(err.value) and key in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("size", [(48, 64), (37, 50), (16, 17)])
def test_any_input_size(size):
    model = changekit.build_model("fc_siam_diff", num_classes=3, in_channels=4).eval()
    t1, t2 = torch.randn(2, 4, *size), torch.randn(2, 4, *size)
    with torch.no_grad():
        out = model(t1, t2)
    assert out.shape == (2, 3, *size)


def test_too_small_input_is_refused():
    model = changekit.build_model("fc_siam_diff").eval()
    with pytest.raises(ValueError, match="at least 16"):
        model(torch.randn(1, 3, 8, 32), torch.randn(1, 3, 8, 32))


def _synthetic_batch(n: int = 4, size: int = 32, channels: int = 3, seed: int = 0):
    """Date 2 = date 1 plus noise, with a few squares repainted; label = the repainted squares."""
    g = torch.Generator().manual_seed(seed)
    t1 = torch.randn(n, channels, size, size, generator=g)
    t2 = t1 + 0.1 * torch.randn(n, channels, size, size, generator=g)
    label = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        for _ in range(2):
            y, x = torch.randint(0, size - 10, (2,), generator=g).tolist()
            h, w = torch.randint(5, 10, (2,), generator=g).tolist()
            t2[i, :, y : y + h, x : x + w] = torch.randn(channels, 1, 1, generator=g) * 2
            label[i, y : y + h, x : x + w] = 1
    return t1, t2, label


