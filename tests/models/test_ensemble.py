"""Ensembles of one recipe's checkpoints: `changekit export A B --out M.safetensors` writes one file whose model gives
the members' mean probability, loads strictly, runs through optimize_for_inference and ONNX, and refuses members
that read data differently."""

from __future__ import annotations

import pytest
import torch

import changekit
from changekit.cli import main as cli
from changekit.errors import ConfigError
from changekit.models.ensemble import ChangeEnsemble
from changekit.models.pretrained import read_model_file_info

INFO = {"arch": "fc_ef", "arch_args": {"in_channels": 4}, "num_classes": 2, "mean": [1.0] * 4, "std": [2.0] * 4,
        "standardize": "per-image",
        "units": {"dtype": "uint16", "range": [0, 10000], "product": "L1C", "band_names": ["B02", "B03", "B04", "B08"]}}


def checkpoint(path, seed: int, **changes):
    torch.manual_seed(seed)
    model = changekit.build_model("fc_ef", in_channels=4)
    for m in model.modules():  # trained-looking batch norms, so that folding them changes the weights
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "changekit": INFO | changes},
               path)
    return model.eval()


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 4, 32, 32, generator=g), torch.randn(2, 4, 32, 32, generator=g)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("ens")
    members = [checkpoint(d / f"s{s}.ckpt", s) for s in range(3)]
    out = d / "ens.safetensors"
    assert cli(["export", *(str(d / f"s{s}.ckpt") for s in range(3)), "--out", str(out), "--threshold", "0.4"]) == 0
    return d, out, members


def test_the_ensemble_gives_the_members_mean_probability(exported):
    _, out, members = exported
    model = changekit.load_model(str(out))
    assert isinstance(model, ChangeEnsemble) and len(model.members) == 3
    info = model.changekit_info
    assert info["ensemble"] == 3 and info["threshold"] == 0.4 and info["standardize"] == "per-image"
    assert read_model_file_info(out)["ensemble"] == 3
    with torch.no_grad():
        mean = torch.stack([m(*inputs()).softmax(1) for m in members]).mean(0)
        out_prob = model(*inputs()).softmax(1)
    assert out_prob.shape == (2, 2, 32, 32)
    torch.testing.assert_close(out_prob, mean, rtol=0, atol=1e-6)
    fast = changekit.optimize_for_inference(changekit.load_model(str(out)), "fp32")  # batch norms folded per member
    with torch.no_grad():
        torch.testing.assert_close(fast(*inputs()).softmax(1), mean, rtol=0, atol=1e-5)


def test_an_ensemble_of_one_model_twice_is_that_model(tmp_path):
    model = checkpoint(tmp_path / "m.ckpt", 0)
    twice = ChangeEnsemble([model, model]).eval()
    with torch.no_grad():
        torch.testing.assert_close(twice(*inputs()).softmax(1), model(*inputs()).softmax(1), rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="at least 2"):
        ChangeEnsemble([model])


def test_the_ensemble_exports_to_onnx(exported):
    d, out, _ = exported
    assert cli(["export", str(out), "--out", str(d / "ens.onnx"), "--size", "32"]) == 0
    assert (d / "ens.onnx").is_file()


def test_members_of_other_recipes_are_refused_in_one_line(exported, capsys):
    d, _, _ = exported
    checkpoint(d / "other.ckpt", 3, standardize="per-date")
    code = cli(["export", str(d / "s0.ckpt"), str(d / "other.ckpt"), "--out", str(d / "bad.safetensors")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "other.ckpt" in err and "standardize" in err and "one recipe" in err
    assert not list(d.glob("bad.*"))
    assert cli(["export", str(d / "ens.safetensors"), str(d / "s0.ckpt"), "--out", str(d / "bad.safetensors")]) == 2
    assert "already an ensemble of 3" in capsys.readouterr().err
    assert cli(["export", "configs/pretrained/s2-urban-rgbn.yaml", str(d / "s0.ckpt"), "--out",
                str(d / "bad.safetensors")]) == 2
    assert "from changekit checkpoints" in capsys.readouterr().err


def test_a_damaged_member_count_is_named(tmp_path):
    from changekit.models.pretrained import write_model_file

    path = write_model_file(checkpoint(tmp_path / "m.ckpt", 0), tmp_path / "m.safetensors", INFO | {"ensemble": 1})
    with pytest.raises(ConfigError, match="ensemble=1"):
        changekit.load_model(str(path))
    path = write_model_file(checkpoint(tmp_path / "m.ckpt", 0), tmp_path / "m.safetensors", INFO | {"ensemble": 2})
    with pytest.raises(Exception, match="m.safetensors"):  # one model's weights where two are recorded
        changekit.load_model(str(path))
