"""Reading weight files safely and loading them strictly (changekit.checkpoints)."""

import collections
import pickle

import pytest
import torch
import torch.nn as nn

from changekit.checkpoints import CheckpointError, Unloaded, load_weights, read_checkpoint, read_state_dict


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)


class MessageHub:  # stands in for mmengine's bookkeeping classes
    def __init__(self):
        self.log = {"loss": [1.0, 0.5]}

    def __reduce__(self):  # if this were executed on load, it would run os.system
        import os

        return (os.system, ("echo PWNED > /dev/null",))


def test_plain_lightning_and_opencd_layouts_load(tmp_path):
    src = Tiny()
    sd = src.state_dict()
    torch.save(sd, tmp_path / "plain.pth")
    torch.save({"state_dict": {f"model.{k}": v for k, v in sd.items()}, "hyper_parameters": {"arch": "x"}}, tmp_path / "l.ckpt")
    for name in ("plain.pth", "l.ckpt"):
        dst = load_weights(Tiny(), tmp_path / name)
        for k, v in dst.state_dict().items():
            assert torch.equal(v, sd[k])


def test_mmengine_meta_objects_are_never_executed(tmp_path, monkeypatch):
    sd = Tiny().state_dict()
    path = tmp_path / "opencd.pth"
    torch.save({"state_dict": sd, "meta": {"hub": MessageHub()}, "message_hub": MessageHub()}, path)
    called = []
    import os

    monkeypatch.setattr(os, "system", lambda *a: called.append(a))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # what we try first
    obj = read_checkpoint(path)
    assert called == []  # the malicious __reduce__ target was replaced by an inert placeholder
    assert isinstance(obj["message_hub"], Unloaded)
    assert set(read_state_dict(path)) == set(sd)
    load_weights(Tiny(), path)


def test_safetensors_and_torchscript(tmp_path):
    from safetensors.torch import save_file

    m = Tiny()
    save_file(m.state_dict(), tmp_path / "w.safetensors")
    assert set(read_state_dict(tmp_path / "w.safetensors")) == set(m.state_dict())
    scripted = torch.jit.script(nn.Sequential(nn.Conv2d(3, 2, 1)))
    scripted.save(str(tmp_path / "ts.pt"))
    sd = read_state_dict(tmp_path / "ts.pt")
    assert set(sd) == {"0.weight", "0.bias"}


def test_strict_errors_name_the_file_and_keys(tmp_path):
    sd = collections.OrderedDict(Tiny().state_dict())
    missing = dict(sd)
    missing.pop("bn.bias")
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing\.pth does not fit .*missing keys \(1\): bn\.bias"):
        load_weights(Tiny(), tmp_path / "missing.pth")
    extra = dict(sd)
    extra["head.weight"] = torch.zeros(1)
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): head\.weight"):
        load_weights(Tiny(), tmp_path / "extra.pth")
    shape = dict(sd)
    shape["conv.weight"] = torch.zeros(4, 3, 5, 5)
    torch.save(shape, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"conv\.weight: checkpoint \(4, 3, 5, 5\) vs model \(4, 3, 3, 3\)"):
        load_weights(Tiny(), tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match="no such weight file"):
        load_weights(Tiny(), tmp_path / "nope.pth")
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pth: not a readable"):
        load_weights(Tiny(), tmp_path / "corrupt.pth")


def test_build_model_unknown_name_suggests():
    from changekit import build_model

    with pytest.raises(KeyError, match="unknown model 'definitely_not_a_model'"):
        build_model("definitely_not_a_model")
