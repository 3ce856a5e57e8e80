"""Shared inputs of the fuzz suite: a tiny change model (as a checkpoint and as ONNX) and a small valid pair."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fuzz_ckpt(tiny_scene_ckpt):
    """A changekit checkpoint of a tiny FC-Siam-diff trained on uint8 RGB (units recorded)."""
    return tiny_scene_ckpt


@pytest.fixture(scope="session")
def fuzz_pair(tmp_path_factory):
    """A valid 96 x 128 uint8 RGB pair (UTM) with a label."""
    from helpers.toys import write_scene_pair

    d = tmp_path_factory.mktemp("fuzz-pair")
    write_scene_pair(d / "t1.tif", d / "t2.tif", d / "label.tif", size=(96, 128), seed=3, changes_per_mpx=400)
    return d


@pytest.fixture(scope="session")
def fuzz_onnx(fuzz_ckpt, tmp_path_factory):
    """The tiny model exported to ONNX with changekit's metadata."""
    from changekit import load_model
    from changekit.deploy.onnx import export_onnx

    path = tmp_path_factory.mktemp("fuzz-onnx") / "m.onnx"
    model = load_model(fuzz_ckpt)
    export_onnx(model, path, size=(32, 32), info=model.changekit_info)
    return path


@pytest.fixture(scope="session")
def fuzz_scene(fuzz_pair, fuzz_ckpt, tmp_path_factory):
    """A finished scene run of the tiny model over the pair (for the viewer and the records)."""
    from changekit.cli import main

    out = tmp_path_factory.mktemp("fuzz-scene") / "o"
    assert main(["scene", "--t1", str(fuzz_pair / "t1.tif"), "--t2", str(fuzz_pair / "t2.tif"), "--ckpt",
                 str(fuzz_ckpt), "--out", str(out), "--window", "32", "--overlap", "8", "--quiet"]) == 0
    return out
