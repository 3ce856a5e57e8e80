"""ISPRS Potsdam / Vaihingen from the official tiles: the crops, names, splits and labels of mmseg's converters."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers.isprs_toy import eroded, write_tif

from changekit.cli import main as cli
from changekit.data.isprs import CLASS_COLOURS, SPLITS, encode_colours
from changekit.data.presets import build_dataset
from changekit.errors import ChangekitError, ConfigError, DataError

SIZE = (700, 1100)  # (H, W): not multiples of 512, so the last crops are pulled back


def _mmseg_boxes(h: int, w: int, cs: int = 512, ss: int = 256) -> set[tuple[int, int, int, int]]:
    """The converters' crop boxes, computed as tools/dataset_converters/potsdam.py does (rows/cols from the stride,
    origins at multiples of the clip size, pulled back at the edge; duplicates collapse into one file)."""
    def count(n):
        k = math.ceil((n - cs) / ss)
        return k if k * ss + cs >= n else k + 1

    boxes = set()
    for y in range(count(h) + 1):
        for x in range(count(w) + 1):
            x0, y0 = x * cs, y * cs
            x0 += (w - x0 - cs) if x0 + cs > w else 0
            y0 += (h - y0 - cs) if y0 + cs > h else 0
            boxes.add((x0, y0, min(x0 + cs, w), min(y0 + cs, h)))
    return boxes


def _tile(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image CHW, full label RGB CHW, class map) of a tile of 50 px blocks of random classes (pure colours only)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 6, (SIZE[0] // 50 + 1, SIZE[1] // 50 + 1))
    cls = np.kron(blocks, np.ones((50, 50), np.int64))[: SIZE[0], : SIZE[1]]
    label = np.array(CLASS_COLOURS, np.uint8)[cls].transpose(2, 0, 1)
    image = (rng.integers(0, 40, (3, *SIZE)) + 30 * cls[None]).astype(np.uint8)
    return image, label, cls


@pytest.fixture(scope="module")
def potsdam(tmp_path_factory):
    root = tmp_path_factory.mktemp("potsdam")
    for sub in ("2_Ortho_RGB", "5_Labels_all", "5_Labels_all_noBoundary"):
        (root / sub).mkdir()
    truth = {}
    for k, tile in enumerate(("2_10", "2_11", "5_15")):
        image, label, cls = _tile(k)
        write_tif(root / "2_Ortho_RGB" / f"top_potsdam_{tile}_RGB.tif", image)
        write_tif(root / "5_Labels_all" / f"top_potsdam_{tile}_label.tif", label)
        write_tif(root / "5_Labels_all_noBoundary" / f"top_potsdam_{tile}_label_noBoundary.tif", eroded(label, cls))
        truth[tile] = (image, cls, eroded(label, cls))
    return root, truth


def test_crops_names_and_labels_are_mmseg_converters(potsdam):
    root, truth = potsdam
    ds = build_dataset("potsdam-tiles", root, "train", tiles=["2_10", "2_11"])
    boxes = _mmseg_boxes(*SIZE)
    assert len(boxes) == 2 * 3 and len(ds) == 2 * len(boxes)  # 700 -> 0, 188; 1100 -> 0, 512, 588
    assert {s.name for s in ds.samples} == {f"{t}_{x0}_{y0}_{x1}_{y1}" for t in ("2_10", "2_11")
                                            for x0, y0, x1, y1 in boxes}
    i = next(k for k, s in enumerate(ds.samples) if s.name == "2_11_588_188_1100_700")
    arrays = ds.load_arrays(i)
    image, cls, eroded = truth["2_11"]
    assert np.array_equal(arrays["image"], image[:, 188:700, 588:1100].transpose(1, 2, 0).astype(np.float32))
    expected = cls[188:700, 588:1100].copy()
    expected[(eroded[:, 188:700, 588:1100] == 0).all(0)] = 255  # black boundary pixels are ignored
    assert np.array_equal(arrays["label"], expected)
    assert 0 < (expected == 255).mean() < 0.2
    # as mmseg's converted PNG stores it: class + 1, 0 on the boundary
    raw = ds.raw_label(i)
    assert np.array_equal(raw, np.where(expected == 255, 0, expected + 1))
    item = ds[i]
    assert item["image"].shape == (3, 512, 512) and "t1" not in item


def test_full_labels_and_the_colour_code():
    rgb = np.array([[[255, 255, 255], [0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0], [255, 0, 0],
                     [0, 0, 0], [250, 0, 0]]], np.uint8)
    # impervious, building (blue), low vegetation (cyan), tree, car (yellow), clutter (red); black / others -> 0
    assert encode_colours(rgb).tolist() == [[1, 2, 3, 4, 5, 6, 0, 0]]


def test_full_variant_splits_and_missing_tiles(potsdam):
    root, truth = potsdam
    full = build_dataset("potsdam-tiles", root, "val", tiles=["5_15"], boundary="full")
    lab = full.load_arrays(0)["label"]
    assert (lab != 255).all() and np.array_equal(lab, truth["5_15"][1][:512, :512])
    assert len(SPLITS["potsdam"]["train"]) == 24 and len(SPLITS["potsdam"]["val"]) == 14
    with pytest.raises(DataError, match=r"22 train tile\(s\) of potsdam have no RGB image .*name the tiles to use"):
        build_dataset("potsdam-tiles", root, "train")
    with pytest.raises(DataError, match=r"none of tiles \['5_15'\] is in the train split"):
        build_dataset("potsdam-tiles", root, "train", tiles=["5_15"])
    with pytest.raises(DataError, match=r"tiles \['9_99'\] are not potsdam tiles"):
        build_dataset("potsdam-tiles", root, "train", tiles=["2_10", "9_99"])
    # one list for both splits (a datamodule's dataset_args): each split takes its own tiles
    tiles = ["2_10", "5_15"]
    assert len(build_dataset("potsdam-tiles", root, "train", tiles=tiles)) == len(
        build_dataset("potsdam-tiles", root, "val", tiles=tiles)) == 6
    with pytest.raises(DataError, match="no potsdam IRRG image tiles"):
        build_dataset("potsdam-tiles", root, "train", tiles=["2_10"], product="IRRG")
    with pytest.raises(ConfigError, match="tiles do.*not apply to this preset"):
        build_dataset("potsdam", root, "train", tiles=["2_10"])


def test_vaihingen_names_and_the_full_labels_folder(tmp_path):
    for d in ("top", "gts_for_participants", "eroded"):
        (tmp_path / d).mkdir()
    image, label, cls = _tile(7)
    write_tif(tmp_path / "top" / "top_mosaic_09cm_area1.tif", image)
    write_tif(tmp_path / "gts_for_participants" / "top_mosaic_09cm_area1.tif", label)  # the image's own file name
    write_tif(tmp_path / "eroded" / "top_mosaic_09cm_area1_noBoundary.tif", eroded(label, cls))
    ds = build_dataset("vaihingen-tiles", tmp_path, "train", tiles=["area1"])
    assert ds.samples[0].name == "area1_0_0_512_512" and ds.samples[0].images[0].parent.name == "top"
    full = build_dataset("vaihingen-tiles", tmp_path, "train", tiles=["area1"], boundary="full")
    assert full.samples[0].label.parent.name == "gts_for_participants"
    assert np.array_equal(full.load_arrays(0)["label"], cls[:512, :512])
    # an image given where a label belongs: refused, not read as all-ignored
    write_tif(tmp_path / "gts_for_participants" / "top_mosaic_09cm_area1.tif", image)
    with pytest.raises(DataError, match="is not a class colour"):
        build_dataset("vaihingen-tiles", tmp_path, "train", tiles=["area1"], boundary="full").load_arrays(0)
    write_tif(tmp_path / "eroded" / "top_mosaic_09cm_area1_noBoundary.tif", image)
    with pytest.raises(DataError, match="is not a class colour"):  # also where boundaries are black
        build_dataset("vaihingen-tiles", tmp_path, "train", tiles=["area1"]).load_arrays(0)


def test_check_dataset_and_stats_on_the_tiles(potsdam, capsys, tmp_path):
    root, truth = potsdam
    args = ["potsdam-tiles", str(root), "--split", "train", "--tiles", "2_10", "2_11"]
    assert cli(["check-dataset", *args]) == 0
    assert "12 image(s) in 1 split(s) load cleanly" in capsys.readouterr().out
    assert cli(["stats", *args]) == 0
    out = capsys.readouterr().out
    assert "1540000 px/band" in out  # each tile once (2 x 700 x 1100), not once per crop
    both = np.concatenate([truth[t][0].reshape(3, -1) for t in ("2_10", "2_11")], axis=1).astype(np.float64)
    assert f"{both[0].mean():.2f}" in out
    assert cli(["check-dataset", "potsdam-tiles", str(tmp_path), "--split", "train"]) == 1  # the verdict: problems
    assert "no potsdam RGB image tiles" in capsys.readouterr().out
    with pytest.raises(ChangekitError, match="nothing to tile"):
        from changekit.data.tools import tile_dataset

        tile_dataset("potsdam-tiles", root, tmp_path / "t", 256)


def test_the_datamodule_trains_on_the_tiles(potsdam):
    from changekit.engine.datamodule import ChangeDataModule

    root, _ = potsdam
    dm = ChangeDataModule(dataset="potsdam-tiles", root=str(root), dataset_args={"tiles": ["2_10", "2_11", "5_15"]},
                          batch_size=2, crop_size=128, augment={"rescale": [0.5, 2.0], "photometric": True})
    dm.setup("fit")
    assert dm.hparams.num_classes == 6 and dm.preset.class_names[1] == "building"
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 128, 128) and "t1" not in batch
    assert set(batch["label"].unique().tolist()) <= set(range(6)) | {255}
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape[-2:] == (512, 512) and val["name"][0].startswith("5_15_")


@pytest.mark.parametrize("site", ["potsdam", "vaihingen"])
def test_the_crops_are_mmseg_converters_own(site, tmp_path):
    """The same tiles cut by mmseg's converters (benchmarks/reference/isprs_converter_check.py ran them): the same
    crop names and, hash for hash, the same image and label pixels."""
    import hashlib
    import json
    from pathlib import Path

    from helpers.isprs_toy import POTSDAM_TILES, VAIHINGEN_TILES, write_official_tiles

    fixture = json.loads((Path(__file__).parents[1] / "fixtures" / "isprs" / "converter_crops.json").read_text())[site]
    write_official_tiles(tmp_path, site)
    tiles = list(POTSDAM_TILES if site == "potsdam" else VAIHINGEN_TILES)
    sha = lambda a: hashlib.sha1(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).hexdigest()  # noqa: E731
    for split in ("train", "val"):
        ds = build_dataset(f"{site}-tiles", tmp_path, split, tiles=tiles)
        ours = {s.name: [sha(ds.load_arrays(i)["image"]), sha(ds.raw_label(i))] for i, s in enumerate(ds.samples)}
        assert ours == fixture[split], split
