"""``changekit info``: parameter counts, trainable/frozen split, FLOPs convention, table and JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import torch.nn as nn

import changekit
from changekit.cli import main as cli_main
from changekit.models.summary import count_flops, parameter_counts

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "changeformer"

# open-cd 1.1.0 / mmengine counter, both dates: ChangeFormer MiT-b0 2.45 G at 256x256 (reference notes).
# Our counter ignores element-wise work (norms, activations, resizing) that mmengine counts, so we allow 3 %.
OPENCD_B0_FLOPS_256 = 2.45e9
FLOPS_TOLERANCE = 0.03


def test_info_json_changeformer_b0(capsys):
    assert cli_main(["info", "changeformer_mit-b0", "--size", "256", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params_total"] == 3_846_754
    assert info["params_trainable"] == 3_846_754 and info["params_frozen"] == 0
    assert info["modules"]["backbone"]["params"] + info["modules"]["decode_head"]["params"] == 3_846_754
    rel = info["flops"] / OPENCD_B0_FLOPS_256 - 1
    print(f"changeformer_mit-b0 @256: {info['flops'] / 1e9:.3f} G (open-cd 2.45 G, {rel:+.1%})")
    assert abs(rel) <= FLOPS_TOLERANCE
    assert info["modules"]["backbone"]["flops"] + info["modules"]["decode_head"]["flops"] == info["flops"]
    assert "multiply-add = 1 FLOP" in info["flops_convention"]


def test_flops_count_one_mac_per_multiply_add():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)

    class Pair(nn.Module):
        in_channels = 3

        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, a, b):
            return self.conv(a) - self.conv(b)

    flops, per_module = count_flops(Pair(), (10, 12))
    macs_one_date = 10 * 12 * 8 * 3 * 3 * 3
    assert flops == 2 * macs_one_date and per_module == {"conv": 2 * macs_one_date}


def test_frozen_parameters_are_split_by_requires_grad():
    model = changekit.build_model("changeformer_mit-b0")
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    counts = parameter_counts(model)
    assert counts["params_frozen"] == counts["modules"]["backbone"]["frozen"] == 3_319_392
    assert counts["params_trainable"] == counts["modules"]["decode_head"]["trainable"] == 527_362


def test_info_table_from_yaml_config(capsys):
    cfg = CONFIGS / "changeformer_mit-b1_256x256_40k_levircd.yaml"
    assert cli_main(["info", str(cfg), "--size", "64", "96"]) == 0
    out = capsys.readouterr().out
    assert "changeformer_mit-b1" in out and "13,940,930" in out and "64x96" in out and "multiply-add" in out


def test_info_unknown_model_is_a_user_error(capsys):
    assert cli_main(["info", "changeformer_mit-b9"]) == 2
    assert "changeformer_mit-b" in capsys.readouterr().err


def test_flops_fall_back_to_cpu_for_data_dependent_models():
    class NeedsValues(nn.Module):
        in_channels = 3

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, a, b):
            scale = float(a.abs().sum() + 1)  # impossible on the meta device
            return self.conv(a) * scale - self.conv(b)

    assert count_flops(NeedsValues(), (8, 8))[0] == 2 * 8 * 8 * 4 * 3
    assert count_flops(NeedsValues(), (8, 8), rebuild=NeedsValues)[0] == 2 * 8 * 8 * 4 * 3


def test_flops_of_module_lists_indexed_by_the_parent():
    class Indexed(nn.Module):
        in_channels = 3

        def __init__(self):
            super().__init__()
            self.stages = nn.ModuleList([nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1)])

        def forward(self, a, b):
            return sum(self.stages[1](self.stages[0](x)) for x in (a, b))

    flops, per_module = count_flops(Indexed(), (8, 8))
    assert flops == per_module["stages"] == 2 * 8 * 8 * (4 * 3 + 4 * 4)


def test_info_on_a_config_whose_weight_files_are_not_downloaded_yet(tmp_path):
    """Counts come from the architecture: a recipe pointing at absent pretrained files is still inspectable."""
    from changekit.models.summary import model_info

    cfg = tmp_path / "cf.yaml"
    cfg.write_text("model:\n  arch: changeformer_mit-b0\n  arch_args: {backbone_weights: pretrain/absent_mit_b0.pth}\n")
    info = model_info(str(cfg), size=(64, 64))
    assert info["params_total"] == 3846754 and info["weights_not_loaded"] == ["backbone_weights"]
