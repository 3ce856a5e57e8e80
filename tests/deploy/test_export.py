"""`changekit export`: every family exports and matches PyTorch, the metadata, scenes on ONNX Runtime, errors,
and the docs' onnxruntime example."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import rasterio
import torch
from helpers.tiny_models import TINY, TINY_BACKBONES
from helpers.toys import write_scene_pair

import changekit
from changekit.cli import main as cli
from changekit.deploy import OnnxModel, export_onnx, read_metadata
from changekit.errors import ConfigError

TINY_FM = dict(kind="clip", patch_size=8, img_size=32, embed_dim=64, num_heads=2, num_layers=3, out_indices=(0, 1, 2))
#: one member per family at test width (BAN: a CLIP and an IN-21k foundation model, reduced width)
FAMILIES = {
    "fc_siam_diff": ("fc_siam_diff", {}),
    "bit": ("bit_r18", TINY["bit"]),
    "changeformer": ("changeformer_mit-b0", TINY["changeformer"]),
    "ban-clip": ("ban", {"fm": TINY_FM, "bitab": "mit-b0"}),
    "ban-in21k": ("ban", {"fm": {**TINY_FM, "kind": "in21k"}, "bitab": "bit"}),
    "ban-scd": ("ban-scd", {"fm": TINY_FM, "bitab": "mit-b0", "channels": 32}),
    "dsqnet": ("dsqnet_vitaev2-s", {**TINY["dsqnet"], "backbone_args": TINY_BACKBONES["dsqnet_vitaev2-s"]}),
    "clipformer": ("clipformer_swin-t_vit-b16", TINY["clipformer"]),
    "unet": ("unet_r18_siam-diff", {}),
}


def _ort(path, t1, t2):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"t1": t1.numpy(), "t2": t2.numpy()})[0]


#: the heavier exports (7-18 s each) run in the slow tier (`make test-slow`, which CI runs too)
SLOW_FAMILIES = {"changeformer", "ban-in21k", "ban-scd", "dsqnet", "clipformer"}


@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f in SLOW_FAMILIES else f
                                    for f in FAMILIES])
def test_every_family_exports_and_matches_pytorch_at_two_sizes(family, tmp_path):
    name, kw = FAMILIES[family]
    torch.manual_seed(0)
    model = changekit.build_model(name, **kw).eval()
    g = torch.Generator().manual_seed(1)
    dynamic = True
    for i, (h, w) in enumerate(((64, 64), (64, 96))):
        meta = export_onnx(model, tmp_path / f"m{i}.onnx", size=(h, w), try_dynamic=dynamic)
        dynamic = meta["dynamic_size"]
        t1, t2 = torch.randn(1, model.in_channels, h, w, generator=g), torch.randn(1, model.in_channels, h, w, generator=g)
        with torch.no_grad():
            ref = model(t1, t2).numpy()
        out = _ort(tmp_path / f"m{i}.onnx", t1, t2)
        assert out.shape == ref.shape == (1, model.num_classes, h, w)
        assert np.abs(out - ref).max() <= 1e-4 * max(np.abs(ref).max(), 1.0), family
        assert meta["fixed_size"] in (None, [h, w]) and meta["arch"] == name
        if meta["dynamic_size"]:  # a dynamic graph serves the second size as it is
            break


def test_cli_export_writes_checked_graph_with_metadata(tmp_path, capsys):
    model = changekit.build_model("fc_siam_diff", base_channel=4)
    cfg = tmp_path / "m.yaml"
    cfg.write_text("model: {arch: fc_siam_diff, arch_args: {base_channel: 4}}\n"
                   "data: {dataset: folder, mean: [10, 20, 30], std: [2, 3, 4], bands: [2, 1, 0]}\n")
    torch.save(model.state_dict(), tmp_path / "w.pth")
    assert cli(["export", str(cfg), "--weights", str(tmp_path / "w.pth"), "--out", str(tmp_path / "m.onnx"),
                "--size", "64", "96"]) == 0
    assert "dynamic H x W" in capsys.readouterr().out
    onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")))
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["arch"] == "fc_siam_diff" and meta["mean"] == [10, 20, 30] and meta["std"] == [2, 3, 4]
    assert meta["bands"] == [2, 1, 0] and meta["window"] == [64, 96] and meta["in_channels"] == 3
    assert meta["changekit_version"] == changekit.__version__ and meta["precision"] == "fp32"
    graph = onnx.load(str(tmp_path / "m.onnx"))
    assert [i.name for i in graph.graph.input] == ["t1", "t2"] and [o.name for o in graph.graph.output] == ["logits"]
    assert cli(["export", str(cfg), "--weights", str(tmp_path / "w.pth"), "--out", str(tmp_path / "h.onnx"),
                "--size", "64", "--precision", "fp16"]) == 0
    assert read_metadata(tmp_path / "h.onnx")["precision"] == "fp16"


@pytest.fixture(scope="module")
def pair_and_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx_scene")
    write_scene_pair(d / "t1.tif", d / "t2.tif", size=(160, 200), seed=4, changes_per_mpx=200)
    torch.manual_seed(0)
    model = changekit.build_model("fc_siam_diff", base_channel=4)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "changekit": {"arch": "fc_siam_diff", "arch_args": {"base_channel": 4}, "num_classes": 2,
                              "mean": [120.0] * 3, "std": [60.0] * 3, "units": {"dtype": "uint8", "range": [0, 255]}}},
               d / "m.ckpt")
    assert cli(["export", str(d / "m.ckpt"), "--out", str(d / "m.onnx"), "--size", "64"]) == 0
    return d


def test_scene_on_onnx_runtime_agrees_with_pytorch(pair_and_ckpt, tmp_path):
    d = pair_and_ckpt
    base = ["scene", "--t1", str(d / "t1.tif"), "--t2", str(d / "t2.tif"), "--window", "64", "--overlap", "16",
            "--quiet"]
    assert cli([*base, "--ckpt", str(d / "m.ckpt"), "--out", str(tmp_path / "pt"), "--precision", "fp32"]) == 0
    assert cli([*base, "--ckpt", str(d / "m.onnx"), "--out", str(tmp_path / "ort")]) == 0
    with rasterio.open(tmp_path / "pt" / "change.tif") as a, rasterio.open(tmp_path / "ort" / "change.tif") as b:
        assert (a.read(1) == b.read(1)).mean() >= 0.9999
    with rasterio.open(tmp_path / "pt" / "probability.tif") as a, rasterio.open(tmp_path / "ort" / "probability.tif") as b:
        assert np.abs(a.read(1).astype(int) - b.read(1).astype(int)).max() <= 1  # the 8-bit rasters: one step at most
    # the probabilities themselves (before 8-bit storage) differ by far less than 1e-3
    model = changekit.load_model(d / "m.ckpt")
    runner = OnnxModel(d / "m.onnx")
    g = torch.Generator().manual_seed(3)
    t1, t2 = torch.randn(3, 3, 64, 64, generator=g), torch.randn(3, 3, 64, 64, generator=g)
    with torch.no_grad():
        diff = (model(t1, t2).softmax(1) - runner(t1, t2).softmax(1)).abs().max()
    assert diff <= 1e-3 * 1e-2


def test_int8_export_quantises_the_large_matmuls_agrees_and_runs_a_scene(pair_and_ckpt, tmp_path, capsys):
    """``export --quantize int8``: ONNX Runtime's dynamic quantiser on the MatMuls with >= 65,536 weights (here
    ChangeFormer's decoder projections), metadata precision int8, argmax agreement with PyTorch fp32 >= 99.5 %, and
    ``scene --ckpt model.int8.onnx`` runs it and records int8."""
    d = pair_and_ckpt
    torch.manual_seed(0)
    model = changekit.build_model("changeformer_mit-b0").eval()
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "changekit": {"arch": "changeformer_mit-b0", "arch_args": {}, "num_classes": 2, "mean": [120.0] * 3,
                              "std": [60.0] * 3, "units": {"dtype": "uint8", "range": [0, 255]}}}, tmp_path / "cf.ckpt")
    out = tmp_path / "cf.int8.onnx"
    assert cli(["export", str(tmp_path / "cf.ckpt"), "--out", str(out), "--size", "64", "--quantize", "int8"]) == 0
    printed = capsys.readouterr().out
    graph = onnx.load(str(out))
    n = sum(node.op_type == "MatMulInteger" for node in graph.graph.node)
    assert n > 0 and f"int8: {n} MatMul/Gemm layer(s) quantised" in printed
    assert read_metadata(out)["precision"] == "int8"
    g = torch.Generator().manual_seed(5)
    t1, t2 = torch.randn(2, 3, 64, 64, generator=g), torch.randn(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        ref = model(t1, t2)
    assert (OnnxModel(out)(t1, t2).argmax(1) == ref.argmax(1)).float().mean() >= 0.995
    assert cli(["scene", "--t1", str(d / "t1.tif"), "--t2", str(d / "t2.tif"), "--ckpt", str(out), "--window", "64",
                "--overlap", "16", "--quiet", "--out", str(tmp_path / "s")]) == 0
    record = json.loads((tmp_path / "s" / "scene.json").read_text())
    assert record["precision"] == "int8" and "exported with" in record["precision_reason"]
    assert cli(["export", str(tmp_path / "cf.ckpt"), "--out", str(tmp_path / "x.onnx"), "--quantize", "int8",
                "--precision", "fp16"]) == 2
    assert "not both" in capsys.readouterr().err


def test_onnx_errors(pair_and_ckpt, tmp_path, capsys):
    d = pair_and_ckpt
    graph = onnx.load(str(d / "m.onnx"))
    del graph.metadata_props[:]
    onnx.save(graph, str(tmp_path / "bare.onnx"))
    with pytest.raises(ConfigError, match=r"lacks changekit's metadata \(mean, std\); give --mean, --std"):
        OnnxModel(tmp_path / "bare.onnx")
    assert OnnxModel(tmp_path / "bare.onnx", overrides={"mean": [0.0] * 3, "std": [1.0] * 3}).in_channels == 3
    # a file that is no ONNX model at all: one line, exit 2 (it was a protobuf DecodeError traceback)
    (tmp_path / "bad.onnx").write_bytes(b"not an onnx model")
    assert cli(["scene", "--t1", str(d / "t1.tif"), "--t2", str(d / "t2.tif"), "--ckpt", str(tmp_path / "bad.onnx"),
                "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "bad.onnx: not an ONNX model" in err and len(err.strip().splitlines()) == 1
    # a fixed-size graph and a window of another size
    fixed = export_onnx(changekit.build_model("changeformer_mit-b0").eval(), tmp_path / "cf.onnx", size=(64, 64),
                        info={"mean": [0.0] * 3, "std": [1.0] * 3})
    assert fixed["fixed_size"] == [64, 64]
    with pytest.raises(ConfigError, match="exported for 64x64 inputs only, not 96x96; use --window 64"):
        OnnxModel(tmp_path / "cf.onnx")(torch.zeros(1, 3, 96, 96), torch.zeros(1, 3, 96, 96))


def test_the_docs_onnxruntime_example_runs(pair_and_ckpt, tmp_path):
    text = (Path(__file__).parents[2] / "docs" / "deploy.md").read_text()
    code = re.search(r"## Without changekit.*?```python\n(.*?)```", text, re.S).group(1)
    assert len(code.strip().splitlines()) <= 25
    (tmp_path / "example.py").write_text(code)
    d = pair_and_ckpt
    r = subprocess.run([sys.executable, str(tmp_path / "example.py"), str(d / "m.onnx"), str(d / "t1.tif"),
                        str(d / "t2.tif")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("(64, 64)") and "changed pixels" in r.stdout
    json.dumps(read_metadata(d / "m.onnx"))  # plain JSON values


def test_a_segmentation_model_exports_with_one_input_and_runs_a_scene(tmp_path, capsys):
    """MCAT-UNet: input ``image``, the class legend in the metadata, `scene --image` on ONNX Runtime = PyTorch."""
    from helpers.toys import write_class_image as _write_image

    torch.manual_seed(0)
    args = {"size": "t", "drop_path_rate": 0.0}
    model = changekit.build_model({"arch": "mcat-unet", "arch_args": args}, num_classes=6)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "changekit": {"arch": "mcat-unet", "arch_args": args, "num_classes": 6, "task": "segmentation",
                              "dataset": "potsdam", "mean": [120.0] * 3, "std": [60.0] * 3}}, tmp_path / "m.ckpt")
    assert cli(["export", str(tmp_path / "m.ckpt"), "--out", str(tmp_path / "m.onnx"), "--size", "64"]) == 0
    graph = onnx.load(str(tmp_path / "m.onnx"))
    assert [i.name for i in graph.graph.input] == ["image"]
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["task"] == "segmentation" and meta["dynamic_size"] and meta["class_names"][1] == "building"
    runner = OnnxModel(tmp_path / "m.onnx")
    assert runner.task == "segmentation"
    with pytest.raises(ConfigError, match=r"takes 1 input\(s\) \(image\), not 2"):
        runner(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64))
    _write_image(tmp_path / "img.tif")
    base = ["scene", "--image", str(tmp_path / "img.tif"), "--window", "96", "--overlap", "32", "--quiet"]
    assert cli([*base, "--ckpt", str(tmp_path / "m.ckpt"), "--out", str(tmp_path / "pt")]) == 0
    assert cli([*base, "--ckpt", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "ort")]) == 0
    with rasterio.open(tmp_path / "pt" / "classes.tif") as a, rasterio.open(tmp_path / "ort" / "classes.tif") as b:
        assert (a.read(1) == b.read(1)).mean() >= 0.999
        assert b.colormap(1)[1][:3] == (0, 0, 255)  # potsdam's building colour, from the file's metadata
    with rasterio.open(tmp_path / "pt" / "confidence.tif") as a, rasterio.open(tmp_path / "ort" / "confidence.tif") as b:
        assert np.abs(a.read(1).astype(int) - b.read(1).astype(int)).max() <= 1
