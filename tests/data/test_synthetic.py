"""Synthetic scenes: determinism by seed, real nuisances, standard layout, seamless tiled GeoTIFFs."""

from __future__ import annotations

import numpy as np
import rasterio

from changekit.data import build_dataset, make_pair, write_dataset, write_geotiff_pair
from changekit.data.synthetic import render_label, render_pair_window, scene_params


def test_make_pair_deterministic_by_seed():
    a = make_pair((64, 96), seed=5)
    b = make_pair((64, 96), seed=5)
    c = make_pair((64, 96), seed=6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    t1, t2, lab = a
    assert t1.shape == t2.shape == (64, 96, 3) and t1.dtype == t2.dtype == np.uint8
    assert lab.shape == (64, 96) and lab.dtype == np.uint8 and set(np.unique(lab)) <= {0, 1}


def test_changes_and_nuisances():
    ratios, unchanged_diff, changed_diff = [], [], []
    for seed in range(12):
        t1, t2, lab = make_pair((128, 128), seed)
        ratios.append(lab.mean())
        d = np.abs(t1.astype(np.float32) - t2.astype(np.float32)).mean(-1)
        unchanged_diff.append(d[lab == 0].mean())
        if lab.any():
            changed_diff.append(d[lab == 1].mean())
    assert 0.01 < np.mean(ratios) < 0.2  # buildings appear/vanish, a few percent of the pixels
    assert sum(r > 0 for r in ratios) >= 8
    assert np.mean(unchanged_diff) > 5  # illumination, season, shadows, misregistration, noise: not trivial
    assert np.mean(changed_diff) > 1.5 * np.mean(unchanged_diff)  # ... but the changes stand out


def test_write_dataset_standard_layout(tmp_path):
    write_dataset(tmp_path, n_train=3, n_val=1, n_test=2, size=(64, 64), seed=3)
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        ds = build_dataset("levir-cd", tmp_path, split)
        assert len(ds) == n
    raw = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(tmp_path / "train/label/train_00000.png"))
    assert set(np.unique(raw)) <= {0, 255}
    again = tmp_path / "again"
    write_dataset(again, 3, 1, 2, size=(64, 64), seed=3)
    assert (again / "test/B/test_00001.png").read_bytes() == (tmp_path / "test/B/test_00001.png").read_bytes()
    item = build_dataset("levir-cd", tmp_path, "train")[0]
    assert set(item["label"].unique().tolist()) <= {0, 1}


def test_geotiff_pair_georeferenced_and_seamless(tmp_path):
    h, w = 300, 520  # several 128-px tiles, ragged edges
    p1, p2, pl = tmp_path / "t1.tif", tmp_path / "t2.tif", tmp_path / "lab.tif"
    write_geotiff_pair(p1, p2, pl, size=(h, w), seed=9, crs="EPSG:32631",
                       transform=((600000.0, 5500000.0), 0.3), tile=128, nodata=0, bands=4)
    with rasterio.open(p1) as a, rasterio.open(p2) as b, rasterio.open(pl) as lab:
        assert a.crs.to_epsg() == 32631 and a.transform == b.transform == lab.transform
        assert a.transform.c == 600000.0 and a.transform.f == 5500000.0 and a.transform.a == 0.3 and a.transform.e == -0.3
        assert (a.height, a.width, a.count, a.nodata) == (h, w, 4, 0) and lab.count == 1
        t1, t2, lb = a.read(), b.read(), lab.read(1)
    assert t1.dtype == np.uint8 and t1.min() >= 1  # nodata value never appears in valid pixels
    sp = scene_params(9)
    np.testing.assert_array_equal(lb, render_label(sp, 0, 0, h, w))  # tiles stitch into one scene label
    # structure (everything but per-tile noise) matches a direct render of a window across tile borders
    ref1, _ = render_pair_window(sp, 100, 100, 60, 60, noise_seed=0)
    got = t1[:3, 100:160, 100:160].transpose(1, 2, 0).astype(np.float32)
    noise = sp.dates[0].noise
    assert np.abs(got - np.clip(ref1, 1, 255)).mean() < 2.0 * noise
    assert lb.any() and not np.array_equal(t1[:3], t2[:3])


def test_nuisance_knob():
    def unchanged_diff(k):
        out = []
        for seed in range(6):
            t1, t2, lab = make_pair((96, 96), seed, nuisance=k)
            out.append(np.abs(t1.astype(np.float32) - t2.astype(np.float32)).mean(-1)[lab == 0].mean())
        return np.mean(out)

    calm, default = unchanged_diff(0.0), unchanged_diff(1.0)
    assert calm < 2.0 < 5.0 < default  # without nuisances only new/vanished buildings' shadows differ
    np.testing.assert_array_equal(make_pair((64, 64), 4, 0.0)[2], make_pair((64, 64), 4, 1.0)[2])  # same changes
