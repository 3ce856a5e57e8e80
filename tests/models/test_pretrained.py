"""changekit's shipped models: names, strict loading with a fixed output (catches a broken weight file), scenes from
Sentinel-2 band folders, the L1C/L2A guard, and the .safetensors export they are made with."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rasterio
import torch
from helpers.s2_toy import SQUARE, write_band_folder

import changekit
from changekit.cli import main as cli
from changekit.errors import ConfigError
from changekit.models.pretrained import PRETRAINED, WEIGHTS_DIR, read_model_file_info

#: name -> (input bands, sum of the logits and the first four logit values on the fixed input below), measured
#: when the weights were made; a damaged or swapped file changes them (an ensemble's "logits" are its log mean
#: probabilities)
FINGERPRINTS = {
    "s2-urban-13band": (13, -4929.9238, [-0.097385, -0.046634, -0.058224, -0.050199]),
    "s2-urban-rgbn": (4, -77.7677, [1.013508, 1.516639, 1.588592, 1.649436]),
    "aerial-airchange-rgb": (3, 24.1262, [0.318031, 0.445077, 0.402997, 0.353144]),
}


def fixed_input(c: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, c, 32, 32, generator=g), torch.randn(1, c, 32, 32, generator=g)


def test_names_follow_the_conventions_and_are_listed(capsys):
    assert set(PRETRAINED) == set(FINGERPRINTS)
    assert any(n.startswith("s2-") and "rgbn" in n for n in PRETRAINED)
    assert any(n.startswith("s2-") and "rgbn" not in n for n in PRETRAINED)
    assert any(n.startswith("aerial-") for n in PRETRAINED)
    assert cli(["models", "--names"]) == 0
    names = capsys.readouterr().out.split()
    assert set(PRETRAINED) <= set(names) and "fc_ef" in names
    assert cli(["models", "s2-*", "--json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["kind"] == "pretrained"]
    assert {r["name"] for r in rows} == {n for n in PRETRAINED if n.startswith("s2-")}
    assert all(0 < r["heldout"]["f1"] <= 1 for r in rows)


@pytest.mark.parametrize("name", sorted(FINGERPRINTS))
def test_shipped_weights_load_strictly_and_give_a_fixed_output(name):
    model = changekit.load_model(name)
    info = model.changekit_info
    bands, total, first = FINGERPRINTS[name]
    assert info["in_channels"] == bands and 0 < info["threshold"] < 1
    card = PRETRAINED[name]  # the card repeats what the file records: they must not drift apart
    assert (card["arch"], card["threshold"], card.get("ensemble")) == (info["arch"], info["threshold"],
                                                                       info.get("ensemble"))
    with torch.no_grad():
        out = model(*fixed_input(bands))
    assert out.shape == (1, 2, 32, 32)
    assert out.sum().item() == pytest.approx(total, rel=1e-4, abs=1e-3)
    assert out.flatten()[:4].tolist() == pytest.approx(first, rel=1e-4, abs=1e-4)
    meta = read_model_file_info(WEIGHTS_DIR / f"{name}.safetensors")
    units = meta["units"]
    if name.startswith("s2-"):
        assert units["dtype"] == "uint16" and units["product"] == "L1C" and len(units["band_names"]) == bands


def test_unknown_names_are_refused_with_suggestions():
    with pytest.raises(ConfigError, match="did you mean s2-urban-13band"):
        changekit.load_model("s2-urban-13bnd")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    d = tmp_path_factory.mktemp("s2")
    write_band_folder(d / "S2A_MSIL1C_20160101.SAFE" / "IMG_DATA", 1)
    write_band_folder(d / "S2A_MSIL1C_20170101.SAFE" / "IMG_DATA", 2)
    write_band_folder(d / "S2B_MSIL2A_20170101.SAFE" / "IMG_DATA", 2)
    write_band_folder(d / "plain_d1", 1)
    write_band_folder(d / "plain_d2", 2, drop=("B08",))
    return d


def test_scene_from_band_folders_with_a_shipped_model(folders, tmp_path, capsys):
    t1 = folders / "S2A_MSIL1C_20160101.SAFE"
    t2 = folders / "S2A_MSIL1C_20170101.SAFE"
    code = cli(["scene", "--t1", str(t1), "--t2", str(t2), "--model", "s2-urban-rgbn", "--out", str(tmp_path / "o"),
                "--window", "64", "--overlap", "16", "--quiet"])
    assert code == 0, capsys.readouterr()
    rec = json.loads((tmp_path / "o" / "scene.json").read_text())
    assert rec["threshold"] == changekit.load_model("s2-urban-rgbn").changekit_info["threshold"]
    assert rec["scaling"]["mode"] == "none"  # uint16 digital numbers, as the model was trained on
    assert rec["display"]["bands"] == [3, 2, 1]  # B04 B03 B02 of (B02 B03 B04 B08)
    with rasterio.open(tmp_path / "o" / "t1.vrt") as ds:
        assert ds.descriptions == ("B02", "B03", "B04", "B08")
    with rasterio.open(tmp_path / "o" / "probability.tif") as ds:
        prob = ds.read(1)
        assert ds.crs.to_epsg() == 32631 and prob.shape == (72, 96)
    for f in json.loads((tmp_path / "o" / "changes.geojson").read_text())["features"]:
        assert f["properties"]["area_m2"] == pytest.approx(f["properties"]["area"])  # UTM: CRS units are metres
    x0, y0, w, h = SQUARE  # the brightened square is more likely change than the rest
    assert prob[y0 + 4:y0 + h - 4, x0 + 4:x0 + w - 4].mean() > prob[:, 70:].mean()


def test_band_folder_errors_are_one_line(folders, tmp_path, capsys):
    base = ["--model", "s2-urban-rgbn", "--out", str(tmp_path / "o"), "--quiet"]
    assert cli(["scene", "--t1", str(folders / "plain_d1"), "--t2", str(folders / "plain_d2"), *base]) == 2
    err = capsys.readouterr().err
    assert "no file for band(s) B08" in err and "plain_d2" in err and len(err.strip().splitlines()) == 1
    assert cli(["scene", "--t1", str(folders / "S2A_MSIL1C_20160101.SAFE"), "--t2",
                str(folders / "S2B_MSIL2A_20170101.SAFE"), *base]) == 2
    err = capsys.readouterr().err
    assert "L2A" in err and "trained on L1C" in err and "--t2" in err
    assert not (tmp_path / "o" / "change.tif").exists() and not list((tmp_path / "o").glob("*.vrt"))


def test_stacked_rasters_of_unknown_level_get_a_warning(folders, tmp_path):
    from changekit.geo.inputs import band_folder_inputs

    info = changekit.load_model("s2-urban-rgbn").changekit_info
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        band_folder_inputs([tmp_path / "a.tif", tmp_path / "b.tif"], info, tmp_path)
    assert any("product level is unknown" in str(x.message) for x in w)
    with pytest.raises(Exception, match="L2A"):
        band_folder_inputs([tmp_path / "S2B_MSIL2A_x.tif", tmp_path / "b.tif"], info, tmp_path)


def test_export_to_safetensors_round_trip(tmp_path, capsys):
    torch.manual_seed(0)
    model = changekit.build_model("fc_ef", in_channels=4)
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    info = {"arch": "fc_ef", "arch_args": {"in_channels": 4}, "num_classes": 2, "mean": [1.0] * 4, "std": [2.0] * 4,
            "units": {"dtype": "uint16", "range": [0, 10000], "product": "L1C", "band_names": ["B02", "B03", "B04", "B08"]}}
    torch.save({"state_dict": sd, "changekit": info}, tmp_path / "m.ckpt")
    assert cli(["export", str(tmp_path / "m.ckpt"), "--out", str(tmp_path / "m.safetensors"), "--threshold", "0.6"]) == 0
    back = changekit.load_model(str(tmp_path / "m.safetensors"))
    assert back.changekit_info["threshold"] == 0.6 and back.changekit_info["units"]["band_names"][3] == "B08"
    x = fixed_input(4)
    with torch.no_grad():
        assert torch.equal(back(*x), model.eval()(*x))
    assert cli(["export", str(tmp_path / "m.ckpt"), "--out", str(tmp_path / "n.safetensors"), "--threshold", "2"]) == 2
    assert "--threshold" in capsys.readouterr().err
    np.testing.assert_equal(len(list(tmp_path.glob("n.*"))), 0)
