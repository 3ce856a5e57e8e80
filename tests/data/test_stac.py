"""Sentinel-2 dates as STAC Items (docs/sentinel2.md): bands found by name in both catalogue conventions, the
same change map as from stacked files, the area of interest, the cloud mask, and one line for each bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from helpers.s2_toy import SQUARE
from helpers.stac_toy import CLOUD, write_item

from changekit.cli import main as cli

RGBN = ["B02", "B03", "B04", "B08"]


def _err(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny 4-band model that records Sentinel-2 bands (rgbn) and units, trained on ``level`` data."""
    from changekit import build_model

    def make(level: str):
        path = tmp_path_factory.mktemp(f"ck{level}") / "m.ckpt"
        torch.manual_seed(0)
        model = build_model("fc_siam_diff", base_channel=4, in_channels=4)
        torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                    "changekit": {"arch": "fc_siam_diff", "arch_args": {"base_channel": 4, "in_channels": 4},
                                  "num_classes": 2, "mean": [1000.0] * 4, "std": [500.0] * 4,
                                  "units": {"dtype": "uint16", "range": [0, 10000], "band_names": RGBN,
                                            "product": level}}}, path)
        return path

    return make


def _scene(t1, t2, ckpt, out, *extra) -> list[str]:
    return ["scene", "--t1", str(t1), "--t2", str(t2), "--ckpt", str(ckpt), "--out", str(out), "--window", "32",
            "--overlap", "8", "--quiet", "--scale", "none", *extra]


def _stack(folder, path):
    """The item's four 10 m bands as one stacked GeoTIFF (what a user would build by hand)."""
    from changekit.data.sentinel2 import read_band_stack

    arr = read_band_stack(folder, RGBN)
    with rasterio.open(next(folder.glob("*_B02.tif"))) as ref:
        profile = dict(driver="GTiff", width=ref.width, height=ref.height, count=4, dtype="uint16", crs=ref.crs,
                       transform=ref.transform, nodata=0)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.moveaxis(arr, -1, 0))
    return path


def test_items_in_either_convention_give_the_change_map_of_the_stacked_files(tmp_path, ckpt, capsys):
    l1c = ckpt("L1C")
    a, b = write_item(tmp_path / "a", 1), write_item(tmp_path / "b", 2)
    assert cli(_scene(a, b, l1c, tmp_path / "items")) == 0
    out = capsys.readouterr().out
    assert "t1: STAC Item S2_L1C_date1 (L1C, 2019-07-01" in out
    s1, s2 = _stack(tmp_path / "a", tmp_path / "s1.tif"), _stack(tmp_path / "b", tmp_path / "s2.tif")
    assert cli(_scene(s1, s2, l1c, tmp_path / "stacked")) == 0
    for name in ("change.tif", "probability.tif"):
        with rasterio.open(tmp_path / "items" / name) as x, rasterio.open(tmp_path / "stacked" / name) as y:
            assert x.crs == y.crs and x.transform == y.transform
            assert np.array_equal(x.read(), y.read()), name
    rec = json.loads((tmp_path / "items" / "scene.json").read_text())["stac"]
    assert rec["dates"]["t1"]["assets"] == {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}
    # Planetary Computer's L2A naming (asset keys B02 ...), for a model trained on L2A
    c, d = write_item(tmp_path / "c", 1, level="L2A"), write_item(tmp_path / "d", 2, level="L2A")
    assert cli(_scene(c, d, ckpt("L2A"), tmp_path / "l2a")) == 0
    rec = json.loads((tmp_path / "l2a" / "scene.json").read_text())["stac"]
    assert rec["dates"]["t2"]["assets"] == {b: b for b in RGBN} and rec["dates"]["t2"]["level"] == "L2A"


def test_the_area_of_interest_crops_both_dates(tmp_path, ckpt, capsys):
    a, b = write_item(tmp_path / "a", 1), write_item(tmp_path / "b", 2)
    from rasterio.warp import transform_bounds

    # the bbox of the change square (10 m pixels from 500000, 5400000 in UTM 31N), in degrees
    x, y, w, h = SQUARE
    utm = (500000 + 10 * x, 5400000 - 10 * (y + h), 500000 + 10 * (x + w), 5400000 - 10 * y)
    bbox = transform_bounds("EPSG:32631", "EPSG:4326", *utm)
    assert cli(_scene(a, b, ckpt("L1C"), tmp_path / "o", "--bbox", ",".join(f"{v:.8f}" for v in bbox))) == 0
    with rasterio.open(tmp_path / "o" / "change.tif") as c:
        assert abs(c.width - w) <= 2 and abs(c.height - h) <= 2
        assert abs(c.transform.c - utm[0]) <= 10 and abs(c.transform.f - utm[3]) <= 10
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "Polygon", "coordinates": [[[bbox[0], bbox[1]], [bbox[2], bbox[1]],
                                                                  [bbox[2], bbox[3]], [bbox[0], bbox[1]]]]}))
    assert cli(_scene(a, b, ckpt("L1C"), tmp_path / "o2", "--aoi", str(aoi))) == 0
    with rasterio.open(tmp_path / "o2" / "change.tif") as c:
        assert abs(c.width - w) <= 2 and abs(c.height - h) <= 2


def test_the_cloud_mask_is_no_data_and_never_change(tmp_path, ckpt, capsys):
    c, d = write_item(tmp_path / "c", 1, level="L2A"), write_item(tmp_path / "d", 2, level="L2A")
    l2a = ckpt("L2A")
    assert cli(_scene(c, d, l2a, tmp_path / "o", "--mask", "scl")) == 0
    out = capsys.readouterr().out
    x, y, w, h = CLOUD
    fraction = w * h / (96 * 72)
    assert f"t2: STAC Item S2_L2A_date2 (L2A, 2020-07-01T00:00:00+00:00), {100 * fraction:.1f} % masked" in out
    with rasterio.open(tmp_path / "o" / "change.tif") as ds:
        change = ds.read(1)
    assert (change[y:y + h, x:x + w] == 255).all()  # the cloud: no data, not change
    assert (change != 255).sum() == change.size - w * h
    rec = json.loads((tmp_path / "o" / "scene.json").read_text())["stac"]
    assert rec["dates"]["t1"]["masked_fraction"] == 0 and rec["dates"]["t2"]["masked_fraction"] == pytest.approx(fraction, abs=1e-5)
    assert cli(_scene(c, d, l2a, tmp_path / "o2", "--mask", "scl", "--max-masked", "0.05")) == 2
    assert "t2" in (e := _err(capsys)) and "% of the area is masked" in e and "--force" in e
    assert not (tmp_path / "o2" / "change.tif").exists()
    assert cli(_scene(c, d, l2a, tmp_path / "o2", "--mask", "scl", "--max-masked", "0.05", "--force")) == 0
    # any product's mask asset: here SCL read as a plain band, masking the cloud class only
    assert cli(_scene(c, d, l2a, tmp_path / "o3", "--mask", "band:SCL:9")) == 0


@pytest.mark.parametrize("case,expect", [
    ("l2a-for-l1c", "is a Sentinel-2 L2A Item but the model was trained on L1C"),
    ("missing-band", "no asset for band(s) B08"),
    ("no-crs", "has no georeferencing"),
    ("outside-aoi", "does not overlap the area of interest"),
    ("scl-on-l1c", "no scl asset for --mask"),
    ("not-an-item", "is not a STAC Item"),
    ("mixed", "give every date as a STAC Item, or none"),
])
def test_bad_items_are_one_line(tmp_path, ckpt, capsys, case, expect):
    a = write_item(tmp_path / "a", 1)
    extra = []
    if case == "l2a-for-l1c":
        b = write_item(tmp_path / "b", 2, level="L2A")
    elif case == "missing-band":
        b = write_item(tmp_path / "b", 2, drop=("B08",))
    elif case == "no-crs":
        a = write_item(tmp_path / "a2", 1, no_crs=True)
        b = write_item(tmp_path / "b", 2)
    elif case == "outside-aoi":
        b = write_item(tmp_path / "b", 2)
        extra = ["--bbox", "10,10,10.1,10.1"]
    elif case == "scl-on-l1c":
        b = write_item(tmp_path / "b", 2)
        extra = ["--mask", "scl"]
    elif case == "not-an-item":
        b = tmp_path / "b.json"
        b.write_text(json.dumps({"type": "Feature", "stac_version": "1.0.0", "id": 5}))
    else:
        b = next((tmp_path / "a").glob("*_B02.tif"))
    assert cli(_scene(a, b, ckpt("L1C"), tmp_path / "o", *extra)) == 2
    assert expect in _err(capsys)
    assert not (tmp_path / "o" / "change.tif").exists()


def test_a_timeline_of_items(tmp_path, ckpt, capsys):
    """STAC Items as the dates of a timeline: each pair stacks its two Items as scene does."""
    items = [write_item(tmp_path / name, date) for name, date in (("a", 1), ("b", 2), ("c", 2))]
    args = ["timeline", "--dates", *map(str, items), "--ckpt", str(ckpt("L1C")), "--out", str(tmp_path / "o"),
            "--window", "32", "--overlap", "8", "--quiet", "--scale", "none", "--bbox", "3.0,48.74,3.02,48.75"]
    assert cli(args) == 0
    rec = json.loads((tmp_path / "o" / "timeline.json").read_text())
    assert [p["to"] for p in rec["pairs"]] == [2, 3]
    for k in (2, 3):
        stac = json.loads((tmp_path / "o" / "pairs" / f"{k:02d}" / "scene.json").read_text())["stac"]
        assert stac["dates"]["t1"]["item"].startswith("S2_L1C_date") and stac["bbox"] is not None
    capsys.readouterr()
    assert cli(args) == 0  # a rerun keeps both pairs (what the run recorded is not a setting)
    assert "(consecutive pairs, 2 kept from before)" in capsys.readouterr().out
