"""`changekit scene` from the command line; band selection, value scaling and the window grid."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from helpers.toys import write_scene_pair

from changekit import build_model
from changekit.cli import main as cli
from changekit.geo.inputs import open_inputs, resolve_scaling, train_range
from changekit.geo.windows import Grid


@pytest.fixture(scope="module")
def pair16(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair16")
    write_scene_pair(d / "t1.tif", d / "t2.tif", size=(200, 300), seed=5, bands=4, dtype="uint16")
    return d


def _ckpt(path, with_config: bool):
    torch.manual_seed(0)
    model = build_model("fc_siam_diff")
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    obj = {"state_dict": sd}
    if with_config:
        obj["changekit"] = {"arch": "fc_siam_diff", "arch_args": {"num_classes": 2, "in_channels": 3, "base_channel": 16},
                            "num_classes": 2, "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
    torch.save(obj, path)
    return model


def test_cli_with_config_bands_and_dtype_scaling(pair16, tmp_path, capsys):
    _ckpt(tmp_path / "w.ckpt", with_config=False)
    code = cli(["scene", "--t1", str(pair16 / "t1.tif"), "--t2", str(pair16 / "t2.tif"),
                "--config", "configs/fcsn/fc_siam_diff_256x256_40k_levircd.yaml", "--ckpt", str(tmp_path / "w.ckpt"),
                "--out", str(tmp_path / "out"), "--bands", "3,2,1", "--scale", "dtype", "--window", "128",
                "--overlap", "32", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "bands [3, 2, 1]" in out and "dtype (uint16)" in out
    with rasterio.open(tmp_path / "out" / "change.tif") as c, rasterio.open(pair16 / "t1.tif") as src:
        assert c.crs == src.crs and c.transform == src.transform


def test_cli_checkpoint_with_its_own_config(pair16, tmp_path, capsys):
    pytest.importorskip("changekit.engine.task")
    _ckpt(tmp_path / "m.ckpt", with_config=True)
    code = cli(["scene", "--t1", str(pair16 / "t1.tif"), "--t2", str(pair16 / "t2.tif"), "--ckpt",
                str(tmp_path / "m.ckpt"), "--out", str(tmp_path / "out"), "--bands", "1,2,3", "--window", "128",
                "--overlap", "0", "--no-vectors", "--quiet"])
    assert code == 0, capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["change.tif", "probability.tif", "scene.json"]


def test_cli_errors_are_user_errors(pair16, tmp_path, capsys):
    _ckpt(tmp_path / "w.ckpt", with_config=False)
    base = ["scene", "--t1", str(pair16 / "t1.tif"), "--t2", str(pair16 / "t2.tif"), "--config",
            "configs/fcsn/fc_siam_diff_256x256_40k_levircd.yaml", "--ckpt", str(tmp_path / "w.ckpt"), "--out", str(tmp_path / "o")]
    assert cli(base + ["--bands", "5,2,1"]) == 2
    assert "4 band(s)" in capsys.readouterr().err
    assert cli(base + ["--bands", "1,2"]) == 2
    assert "model takes 3" in capsys.readouterr().err
    assert cli(base + ["--scale", "linear:5"]) == 2
    assert "linear:MIN,MAX" in capsys.readouterr().err
    assert cli(["scene", "--t1", "nope.tif", "--t2", "nope.tif", "--config", "fc_siam_diff", "--out", str(tmp_path)]) == 2


def test_scaling_rules(pair16):
    with open_inputs([pair16 / "t1.tif", pair16 / "t2.tif"], [1, 2, 3]) as inp:
        assert resolve_scaling("none", inp, (0, 255)).gain == (1.0, 1.0, 1.0)
        d = resolve_scaling("dtype", inp, (0, 255))
        assert d.gain[0] == pytest.approx(1 / 257) and d.offset[0] == 0 and d.clip is None
        lin = resolve_scaling("linear:0,3000", inp, (0, 255))
        assert lin.gain[0] * 3000 == pytest.approx(255) and lin.clip == (0, 255)
        auto = resolve_scaling("auto", inp, (0, 255))  # uint16 -> percentile of both dates together
        assert auto.mode.startswith("percentile 2..98")
        with rasterio.open(pair16 / "t1.tif") as a, rasterio.open(pair16 / "t2.tif") as b:
            v = np.concatenate([a.read(1).ravel(), b.read(1).ravel()]).astype(float)
        lo, hi = np.percentile(v, [2, 98])
        assert lo * auto.gain[0] + auto.offset[0] == pytest.approx(0, abs=3) and hi * auto.gain[0] + auto.offset[0] == pytest.approx(255, abs=3)
    assert train_range([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]) == (0.0, 1.0) and train_range([123.7]) == (0.0, 255.0)
    assert train_range([0.0], [255.0]) == (0.0, 255.0) and train_range([0.5], [0.2], recorded=[0, 10000]) == (0.0, 10000.0)


@pytest.mark.parametrize("size,window,overlap", [((1000, 700), 256, 64), ((100, 90), 128, 32), ((513, 512), 512, 128)])
def test_grid_covers_scene_and_weights_sum_to_one(size, window, overlap):
    g = Grid(size[0], size[1], window, overlap)
    for starts, wts, length, win in ((g.rows, g.weights_y(), size[0], g.win_h), (g.cols, g.weights_x(), size[1], g.win_w)):
        assert starts[0] == 0 and starts[-1] + win == length
        total = np.zeros(length)
        for s, w in zip(starts, wts):
            total[s:s + win] += w
            assert (w > 0).all()
        np.testing.assert_allclose(total, 1.0, rtol=1e-6)


def test_demo_scene_writes_outputs_and_preview(tmp_path):
    from helpers.toys import DiffModel
    from PIL import Image

    from changekit.demo import demo_scene

    s = demo_scene(DiffModel(), tmp_path, size=(256, 320), window=128, overlap=32, mean=[0.0] * 3, std=[255.0] * 3,
                   scale="none", progress=False)
    for name in ("change.tif", "probability.tif", "changes.geojson", "changes.gpkg", "preview.png", "t2.tif"):
        assert (tmp_path / name).exists(), name
    assert Image.open(tmp_path / "preview.png").size == (320, 256)
    assert 0.0 <= s["f1"] <= 1.0


@pytest.mark.parametrize("native_bf16,want", [("1", "bf16"), ("0", "fp32")])
def test_auto_precision_is_printed_once_and_recorded(native_bf16, want, tiny_scene_ckpt, tmp_path, capsys,
                                                     monkeypatch):
    """The default precision is auto: FC-Siam-diff is validated for bf16 (not int8), so bf16 where the CPU runs it
    natively, else fp32; the choice and why are printed once and recorded in scene.json."""
    import json

    monkeypatch.setenv("CHANGEKIT_CPU_BF16", native_bf16)
    write_scene_pair(tmp_path / "t1.tif", tmp_path / "t2.tif", size=(96, 128), seed=2)
    assert cli(["scene", "--t1", str(tmp_path / "t1.tif"), "--t2", str(tmp_path / "t2.tif"), "--ckpt",
                str(tiny_scene_ckpt), "--out", str(tmp_path / "o"), "--window", "64", "--overlap", "16", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("precision ") == 1 and f"precision {want} (auto: " in out
    record = json.loads((tmp_path / "o" / "scene.json").read_text())
    assert record["precision"] == want
    assert ("natively" if want == "bf16" else "no int8 validated for FCSiamDiff") in record["precision_reason"]
