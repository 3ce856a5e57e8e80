"""Sentinel-2 band folders, OSCD and SZTAKI AirChange read from files made in their official layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from helpers.s2_toy import SQUARE, H, W, band_value, write_band_folder, write_oscd, write_sztaki

from changekit.cli import main as cli
from changekit.data.presets import build_dataset
from changekit.data.sentinel2 import (
    S2_BANDS,
    band_stack_vrt,
    find_band_files,
    level_from_names,
    product_level,
    read_band_stack,
    resolve_band_names,
)
from changekit.errors import ConfigError, DataError


# ---------------------------------------------------------------------------------------------- band folders
def test_band_names_and_sets():
    assert resolve_band_names("all") == S2_BANDS and len(S2_BANDS) == 13 and S2_BANDS.index("B8A") == 8
    assert resolve_band_names("rgbn") == ("B02", "B03", "B04", "B08")
    assert resolve_band_names(["b2", "B8a", "B11"]) == ("B02", "B8A", "B11")
    with pytest.raises(ConfigError, match="B13"):
        resolve_band_names(["B13"])


def test_band_files_found_by_name_finest_first(tmp_path):
    d = tmp_path / "S2B_MSIL2A_20200101.SAFE" / "GRANULE" / "L2A_T31" / "IMG_DATA"
    for res in ("R10m", "R20m"):
        (d / res).mkdir(parents=True)
    for f in ("R10m/T31UDQ_20200101T105441_B02_10m.jp2", "R20m/T31UDQ_20200101T105441_B02_20m.jp2",
              "R20m/T31UDQ_20200101T105441_B8A_20m.jp2", "R20m/T31UDQ_20200101T105441_SCL_20m.jp2"):
        (d / f).write_bytes(b"")
    files = find_band_files(tmp_path)
    assert list(files) == ["B02", "B8A"] and files["B02"].name.endswith("B02_10m.jp2")
    assert product_level(tmp_path / "S2B_MSIL2A_20200101.SAFE") == "L2A"
    assert level_from_names(["S2A_OPER_MSI_L1C_TL_MTI__20160120T104345_A003020_T39QZG_B01.tif"]) == "L1C"
    assert level_from_names(["T40QBM_20180328T065919_B01.tif"]) is None


def test_stack_resamples_every_band_onto_the_10m_grid(tmp_path):
    folder = write_band_folder(tmp_path / "d2", 2)
    arr = read_band_stack(folder, "all")
    assert arr.shape == (H, W, 13) and arr.dtype == np.uint16
    yy, xx = np.mgrid[0:H, 0:W]
    # the 10 m bands are read as stored; the 20 and 60 m bands agree with the pattern away from edges
    for k, band in enumerate(S2_BANDS):
        want = band_value(band, 2, xx, yy).astype(float)
        err = np.abs(arr[..., k] - want)[6:-6, 6:-6]
        x0, y0, w, h = SQUARE
        err[max(0, y0 - 12):y0 + h, max(0, x0 - 12):x0 + w] = 0  # the square's edges blur at 20/60 m
        assert err.max() <= (0 if band in ("B02", "B03", "B04", "B08") else 12), band
    with rasterio.open(band_stack_vrt(folder, "rgbn")) as ds:
        assert ds.count == 4 and (ds.width, ds.height) == (W, H) and ds.descriptions == ("B02", "B03", "B04", "B08")
        assert ds.crs.to_epsg() == 32631 and ds.nodata == 0


def test_missing_bands_are_named(tmp_path):
    folder = write_band_folder(tmp_path / "d1", 1, drop=("B8A", "B11"))
    with pytest.raises(DataError, match=r"no file for band\(s\) B8A, B11"):
        band_stack_vrt(folder, "all")
    assert read_band_stack(folder, "rgbn").shape == (H, W, 4)


# ---------------------------------------------------------------------------------------------- OSCD
@pytest.fixture(scope="module")
def oscd(tmp_path_factory):
    return write_oscd(tmp_path_factory.mktemp("oscd"))


def test_oscd_official_layout_splits_and_labels(oscd):
    train = build_dataset("oscd", oscd, "train")
    assert [s.name for s in train.samples] == ["alpha", "beta", "gamma", "paris"] and train.has_labels
    item = train.load_arrays(0)
    assert item["t1"].shape == (H, W, 13) and item["t1"].dtype == np.float32
    x0, y0, w, h = SQUARE
    lab = item["label"]  # stored 1 = no change, 2 = change
    assert lab[y0:y0 + h, x0:x0 + w].all() and lab.sum() == w * h and set(np.unique(lab)) == {0, 1}
    assert [s.name for s in build_dataset("oscd", oscd, "alpha,gamma").samples] == ["alpha", "gamma"]
    png = build_dataset("oscd", oscd, "alpha", label_source="png").load_arrays(0)["label"]
    assert (png == lab).all()
    test = build_dataset("oscd", oscd, "test", labels=False)
    assert [s.name for s in test.samples] == ["delta"] and not test.has_labels
    with pytest.raises(DataError, match="test labels are not public"):
        build_dataset("oscd", oscd, "test")
    rgbn = build_dataset("oscd", oscd, "alpha", band_names="rgbn", in_channels=4)
    assert rgbn.load_arrays(0)["t1"].shape == (H, W, 4)
    assert rgbn.units()["dtype"] == "uint16" and rgbn.units()["band_names"] == ["B02", "B03", "B04", "B08"]


def test_oscd_heldout_split_and_city_folders(tmp_path):
    root = write_oscd(tmp_path / "flat", cities=("paris", "bordeaux", "pisa", "rennes"), test=(), official=False)
    held = build_dataset("oscd", root, "heldout")
    assert [s.name for s in held.samples] == ["paris", "bordeaux", "pisa"]
    with pytest.raises(DataError, match="nowhere"):
        build_dataset("oscd", root, "nowhere")


def test_oscd_dataset_commands(oscd, capsys):
    assert cli(["check-dataset", "oscd", str(oscd), "--split", "train"]) == 0
    assert "load cleanly" in capsys.readouterr().out
    assert cli(["stats", "oscd", str(oscd), "--split", "alpha", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert len(stats["mean"]) == 13 and stats["images"] == 2 and stats["pixels"] == 2 * H * W


# ---------------------------------------------------------------------------------------------- SZTAKI
def test_sztaki_splits_follow_the_literature(tmp_path):
    root = write_sztaki(tmp_path / "SZTAKI")
    test = build_dataset("sztaki", root, "test")
    assert [s.name for s in test.samples] == ["Szada/1@test", "Tiszadob/3@test"]
    item = test.load_arrays(1)  # Tiszadob/3: gt.BMP
    assert item["t1"].shape == (448, 784, 3) and item["label"].sum() == 20 * 30
    train = build_dataset("sztaki", root, "train")
    names = [s.name for s in train.samples]
    assert names == ["Szada/1@right", "Szada/1@bottom", "Szada/2", "Szada/3", "Tiszadob/1", "Tiszadob/2",
                     "Tiszadob/3@right", "Tiszadob/3@bottom"]
    right, bottom = train.load_arrays(0), train.load_arrays(1)
    assert right["t1"].shape == (640, 168, 3) and bottom["t1"].shape == (192, 784, 3)
    assert right["label"].sum() == 40 * 60 and bottom["label"].sum() == 0  # the test change is in neither strip
    assert [s.name for s in build_dataset("sztaki", root, "train-Szada/3").samples] == [
        n for n in names if n != "Szada/3"]
    with pytest.raises(DataError, match="is a test pair"):
        build_dataset("sztaki", root, "Szada/1,Szada/2")
    assert cli(["check-dataset", "sztaki", str(root), "--split", "test"]) == 0


# ---------------------------------------------------------------------------------------------- per-date standardisation
def test_per_date_standardisation_in_training_and_in_scenes(oscd, tmp_path):
    from helpers.toys import DiffModel

    from changekit.geo.scene import run_scene

    item = build_dataset("oscd", oscd, "alpha", standardize="per-date").load_arrays(0)
    for key in ("t1", "t2"):
        assert np.allclose(item[key].reshape(-1, 13).mean(0), 0, atol=1e-4)
        assert np.allclose(item[key].reshape(-1, 13).std(0), 1, atol=1e-3)
    # per-image: one mean and std over all bands of a date, so the band ratios survive (one affine map per date)
    raw = build_dataset("oscd", oscd, "alpha").load_arrays(0)
    item = build_dataset("oscd", oscd, "alpha", standardize="per-image").load_arrays(0)
    for key in ("t1", "t2"):
        assert abs(item[key].mean()) < 1e-4 and abs(item[key].std() - 1) < 1e-3
        assert not np.allclose(item[key].reshape(-1, 13).std(0), 1, atol=0.05)
        r = raw[key].astype(np.float64)
        assert np.allclose(item[key], (r - r.mean()) / r.std(), atol=1e-4)
    with pytest.raises(DataError, match="standardize"):
        build_dataset("oscd", oscd, "alpha", standardize="global")
    # date 2 = date 1 at 1.6 times the brightness (another season, another sun): a difference detector calls it
    # change unless each date is standardised on its own first, as a model trained so expects
    d1 = write_band_folder(tmp_path / "d1", 1, bands=("B02", "B03", "B04", "B08"))
    d2 = tmp_path / "d2"
    d2.mkdir()
    for f in d1.iterdir():
        with rasterio.open(f) as src:
            profile, data = src.profile, src.read()
        with rasterio.open(d2 / f.name, "w", **profile) as dst:
            dst.write((data * 1.6).astype("uint16"))
    runs = {}
    for standardize in (None, "per-date", "per-image"):
        model = DiffModel(4, gain=8.0, bias=2.0)
        model.changekit_info = {"units": {"dtype": "uint16", "range": [0, 10000], "band_names": ["B02", "B03", "B04", "B08"],
                                          "product": "L1C"}, "standardize": standardize,
                                "mean": [0.0] * 4 if standardize else [1000.0] * 4, "std": [1.0] * 4 if standardize
                                else [300.0] * 4}
        out = tmp_path / f"out-{standardize}"
        with pytest.warns(UserWarning, match="product level is unknown"):
            s = run_scene(d1, d2, out, model=model, mean=model.changekit_info["mean"], std=model.changekit_info["std"],
                          window=64, overlap=16, progress=False, vectors=False)
        runs[standardize] = s["changed_pixels"]
        rec = json.loads((out / "scene.json").read_text())
        assert ("date_stats" in rec) == bool(standardize)
        if standardize == "per-image":  # one mean and std per date, repeated for each band
            assert all(len(set(d["mean"])) == 1 and len(set(d["std"])) == 1 for d in rec["date_stats"])
    assert runs[None] > 0.9 * H * W and runs["per-date"] < 0.01 * H * W and runs["per-image"] < 0.01 * H * W


def test_product_level_reads_the_folder_not_the_folders_above(tmp_path):
    d = write_band_folder(tmp_path / "project_L2A_notes" / "S2A_MSIL1C_2017.SAFE" / "GRANULE" / "IMG_DATA", 1)
    assert product_level(tmp_path / "project_L2A_notes" / "S2A_MSIL1C_2017.SAFE",
                         list(find_band_files(d).values())) == "L1C"
    assert product_level(d, list(find_band_files(d).values())) == "L1C"  # inside the SAFE product
    plain = write_band_folder(tmp_path / "project_L2A_notes" / "dates" / "d1", 1)
    assert product_level(plain, list(find_band_files(plain).values())) is None
