"""check-dataset reports each planted defect; tile keeps splits and georeferencing; stats match numpy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from PIL import Image

from changekit.cli import main as cli
from changekit.data import build_dataset, write_dataset, write_geotiff_pair
from changekit.data.io import read_image


@pytest.fixture
def syn(tmp_path):
    return write_dataset(tmp_path / "syn", n_train=4, n_val=2, n_test=2, size=(48, 48), seed=1)


def test_check_dataset_clean(syn, capsys):
    assert cli(["check-dataset", "levir-cd", str(syn)]) == 0
    out = capsys.readouterr().out
    assert "VERDICT: OK" in out and "48x48" in out and "train" in out and "255" in out
    assert cli(["check-dataset", "levir-cd", str(syn), "--split", "val", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] and rep["val"]["pairs"] == 2 and rep["val"]["bands"] == {"3": 2}
    assert 0 <= rep["val"]["change_ratio"] < 0.5


def test_check_dataset_reports_each_planted_defect(syn, capsys):
    (syn / "train/B/train_00001.png").rename(syn / "train/B/stray.png")  # unmatched names
    (syn / "train/label/train_00002.png").unlink()  # missing label
    (syn / "val/A/val_00000.png").write_bytes(b"\x89PNG garbage")  # corrupt image
    Image.fromarray(np.full((48, 48), 3, np.uint8)).save(syn / "val/label/val_00001.png")  # bad label values
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(syn / "test/B/test_00000.png")  # dates differ in size
    Image.fromarray(np.zeros((48, 48, 4), np.uint8)).save(syn / "test/A/test_00001.png")  # band count
    assert cli(["check-dataset", "levir-cd", str(syn)]) == 1
    out = capsys.readouterr().out
    for needle in ("train_00001", "stray", "no label in", "train_00002", "val/A/val_00000.png: cannot read",
                   "val/label/val_00001.png: label values {3}", "test/B/test_00000.png: size 48x40",
                   "test/A/test_00001.png: has 4 band(s)", "VERDICT: 8 problem(s)"):
        assert needle in out, needle


def test_check_dataset_missing_split_and_empty(tmp_path, capsys):
    (tmp_path / "train/A").mkdir(parents=True)
    assert cli(["check-dataset", "levir-cd", str(tmp_path), "--split", "train", "--split", "test"]) == 1
    out = capsys.readouterr().out
    assert "train/B is missing" in out and "test is missing" in out
    assert cli(["check-dataset", "levir-cd", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().out


def test_check_dataset_flat_folder(syn, capsys):
    assert cli(["check-dataset", "levir-cd", str(syn / "train"), "--quick"]) == 0  # A/B/label directly under root
    assert "(flat)" in capsys.readouterr().out


def test_tile_keeps_splits_and_layout(syn, tmp_path, capsys):
    assert cli(["tile", "levir-cd", str(syn), str(tmp_path / "tiles"), "--size", "32", "--stride", "16"]) == 0
    # 48 px, size 32, stride 16 -> positions 0, 16 -> 4 tiles per pair
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        ds = build_dataset("levir-cd", tmp_path / "tiles", split)
        assert len(ds) == 4 * n and all(s.name.startswith(split) for s in ds.samples)
    src = np.asarray(Image.open(syn / "val/label/val_00001.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "tiles/val/label/val_00001_00016_00000.png")),
                                  src[16:48, 0:32])


def test_tile_geotiff_keeps_georeferencing(tmp_path):
    src = tmp_path / "whole"
    (src / "train/A").mkdir(parents=True)
    (src / "train/B").mkdir(parents=True)
    (src / "train/label").mkdir(parents=True)
    write_geotiff_pair(src / "train/A/scene.tif", src / "train/B/scene.tif", src / "train/label/scene.tif",
                       size=(100, 130), seed=2, transform=((1000.0, 2000.0), 2.0))
    assert cli(["tile", "whu-cd-whole", str(src), str(tmp_path / "t"), "--size", "64"]) == 0
    with rasterio.open(tmp_path / "t/train/A/scene_00036_00066.tif") as ds:
        assert ds.crs.to_epsg() == 32631 and (ds.width, ds.height) == (64, 64)
        assert ds.transform.c == 1000.0 + 66 * 2.0 and ds.transform.f == 2000.0 - 36 * 2.0
        tile = ds.read()
    with rasterio.open(src / "train/A/scene.tif") as ds:
        np.testing.assert_array_equal(tile, ds.read()[:, 36:100, 66:130])
    assert len(build_dataset("whu-cd-whole", tmp_path / "t", "train")) == 6  # 2 rows x 3 cols


def test_stats_match_numpy(syn, capsys):
    assert cli(["stats", "levir-cd", str(syn), "--split", "val", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    px = np.concatenate([read_image(p).reshape(-1, 3) for d in ("A", "B") for p in sorted((syn / "val" / d).iterdir())])
    np.testing.assert_allclose(res["mean"], px.mean(0), rtol=1e-6)
    np.testing.assert_allclose(res["std"], px.std(0), rtol=1e-5)
    assert cli(["stats", "levir-cd", str(syn)]) == 0
    assert "mean: [" in capsys.readouterr().out


def test_cli_bad_input_exits_2(tmp_path, capsys):
    assert cli(["stats", "levir-cd", str(tmp_path), "--split", "train"]) == 2
    assert "split folder" in capsys.readouterr().err
