"""Dataset layouts (each official layout in miniature, loaded through its preset) and bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.dataset_files import H, W, bandon, blocky_label, make_split, random_image, save_array
from PIL import Image

from changekit.data import (
    BandonDataset,
    ChangeDataset,
    build_dataset,
    decode_label,
    get_preset,
    list_presets,
)
from changekit.errors import ConfigError, DataError


def _check(ds, truth) -> None:
    assert len(ds) == len(truth)
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) >= {"t1", "t2", "label", "name"}
        assert item["t1"].dtype == torch.float32 and item["t1"].shape == (3, H, W)
        assert item["label"].dtype == torch.int64 and item["label"].shape == (H, W)
        np.testing.assert_array_equal(item["label"].numpy(), truth[item["name"]], err_msg=item["name"])


# ------------------------------------------------------------------------------------------ official layouts
@pytest.mark.parametrize("preset,dirs,splits", [
    ("levir-cd", ("A", "B", "label"), ("train", "val", "test")),
    ("levir-cd-plus", ("A", "B", "label"), ("train", "test")),
    ("s2looking", ("Image1", "Image2", "label"), ("train", "val", "test")),
    ("sysu-cd", ("time1", "time2", "label"), ("train", "val", "test")),
    ("clcd", ("time1", "time2", "label"), ("train", "val", "test")),
])
def test_split_folder_layouts(tmp_path, preset, dirs, splits):
    p = get_preset(preset)
    assert p.dirs == dirs and p.splits == splits
    for split in splits:
        truth = make_split(tmp_path / split, dirs, [f"{split}_{k}" for k in (1, 2)])
        _check(build_dataset(preset, tmp_path, split), truth)


def test_levir_real_style_names_and_normalisation(tmp_path):
    """LEVIR-CD names like test_2_0000_0512; default normalisation = ImageNet stats (0..255 units)."""
    truth = make_split(tmp_path / "test", ("A", "B", "label"), ["test_2_0000_0512"])
    item = build_dataset("levir-cd", tmp_path, "test")[0]
    raw = np.asarray(Image.open(tmp_path / "test/A/test_2_0000_0512.png"), np.float32)
    mean, std = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
    np.testing.assert_allclose(item["t1"].numpy(), ((raw - mean) / std).transpose(2, 0, 1), atol=1e-5)
    np.testing.assert_array_equal(item["label"].numpy(), truth["test_2_0000_0512"])
    clip = build_dataset("levir-cd", tmp_path, "test", mean="clip")[0]["t1"]
    np.testing.assert_allclose(clip[0].numpy(), (raw[..., 0] - 122.7709) / 68.5005, atol=1e-5)


def test_whu_cd_list_files(tmp_path):
    names = ["whu_0001", "whu_0002", "whu_0003"]
    truth = make_split(tmp_path, ("A", "B", "label"), names)
    (tmp_path / "list").mkdir()
    (tmp_path / "list/train.txt").write_text("whu_0001.png\nwhu_0003.png\n")  # open-cd: names with extension
    (tmp_path / "list/val.txt").write_text("whu_0002\n")  # and without
    _check(build_dataset("whu-cd", tmp_path, "train"), {n: truth[n] for n in ("whu_0001", "whu_0003")})
    _check(build_dataset("whu", tmp_path, "val"), {"whu_0002": truth["whu_0002"]})


def test_whu_cd_whole_tiff(tmp_path):
    truth = make_split(tmp_path / "train", ("A", "B", "label"), ["whole"], sfx=(".tif",) * 3)
    _check(build_dataset("whu-cd-whole", tmp_path, "train"), truth)


def test_cdd_jpg_labels_thresholded(tmp_path):
    truth = make_split(tmp_path / "train", ("A", "B", "OUT"), ["00001", "00002"], sfx=(".jpg",) * 3)
    raw = np.asarray(Image.open(tmp_path / "train/OUT/00001.jpg"))
    assert not set(np.unique(raw)) <= {0, 255}  # JPEG noise is there ...
    _check(build_dataset("cdd", tmp_path, "train"), truth)  # ... and thresholded away
    _check(build_dataset("svcd", tmp_path, "train"), truth)


def test_dsifn_01_masks_png_and_tif(tmp_path):
    tr = make_split(tmp_path / "train", ("t1", "t2", "mask"), ["0", "1"], sfx=(".jpg", ".jpg", ".png"), label_scale=1)
    te = make_split(tmp_path / "test", ("t1", "t2", "mask"), ["0"], sfx=(".jpg", ".jpg", ".tif"), label_scale=1)
    _check(build_dataset("dsifn", tmp_path, "train"), tr)
    _check(build_dataset("dsifn", tmp_path, "test"), te)
    # 0/255 masks under the 0-1 preset are refused with the fix, never read as "ignore"
    make_split(tmp_path / "val", ("t1", "t2", "mask"), ["0"], sfx=(".jpg", ".jpg", ".png"), label_scale=255)
    with pytest.raises(DataError, match=r"val/mask/0\.png.*0-255"):
        build_dataset("dsifn", tmp_path, "val")[0]


def test_bandon_layout(tmp_path):
    tr, sem = bandon(tmp_path, "train", "labels_unch0ch1ig255", enc255=False)
    va, _ = bandon(tmp_path, "val", "labels", enc255=True)
    ds = build_dataset("bandon", tmp_path, "train", semantic=True)
    assert isinstance(ds, BandonDataset)
    _check(ds, tr)
    it = ds[[s.name for s in ds.samples].index("sh/t2VSt3/sh_0")]
    np.testing.assert_array_equal(it["label_sem1"].numpy(), sem[("sh", "t2")])
    np.testing.assert_array_equal(it["label_sem2"].numpy(), sem[("sh", "t3")])
    _check(build_dataset("bandon", tmp_path, "val"), va)


def test_custom_folder_multiband_tiff_band_selection(tmp_path):
    base = tmp_path / "train"
    for n in ("a", "b"):
        save_array(base / "pre" / f"{n}.tif", random_image(1, c=5, dtype=np.uint16))
        save_array(base / "post" / f"{n}.tif", random_image(2, c=5, dtype=np.uint16))
        save_array(base / "gt" / f"{n}.tif", blocky_label(3))
    kw = dict(dirs=("pre", "post", "gt"), suffixes=".tif", mean=[1000.0] * 5, std=[500.0] * 5, in_channels=5)
    item = build_dataset("folder", tmp_path, "train", **kw)[0]
    assert item["t1"].shape == (5, H, W)
    raw = random_image(1, c=5, dtype=np.uint16).astype(np.float32)
    np.testing.assert_allclose(item["t1"].numpy(), ((raw - 1000) / 500).transpose(2, 0, 1), atol=1e-5)
    np.testing.assert_array_equal(item["label"].numpy(), blocky_label(3))  # 0/1 auto-detected
    sel = build_dataset("folder", tmp_path, "train", **dict(kw, bands=[3, 2, 1], in_channels=3, mean=[0] * 3, std=[1] * 3))[0]
    np.testing.assert_allclose(sel["t1"].numpy(), raw[..., [3, 2, 1]].transpose(2, 0, 1))


def test_prediction_set_without_labels_and_flat_root(tmp_path):
    make_split(tmp_path, ("A", "B", "label"), ["x"])
    import shutil

    shutil.rmtree(tmp_path / "label")
    ds = build_dataset("folder", tmp_path, None, labels="auto")
    item = ds[0]
    assert "label" not in item and item["name"] == "x" and not ds.has_labels
    assert "label" not in build_dataset("levir-cd", tmp_path, None, labels=False)[0]


def test_presets_and_the_config_builder():
    from changekit.engine.datamodule import ChangeDataModule

    assert {"levir-cd", "levir-cd-plus", "s2looking", "whu-cd", "whu-cd-whole", "cdd", "sysu-cd", "dsifn",
            "clcd", "bandon", "folder"} <= set(list_presets())
    assert get_preset("bandon").dataset_class is BandonDataset and get_preset("levir-cd").dataset_class is ChangeDataset
    with pytest.raises(ConfigError, match="unknown dataset preset 'levirx'"):
        get_preset("levirx")
    with pytest.raises(ConfigError, match="data.root"):
        ChangeDataModule(dataset="levir-cd").build_dataset("train")


def test_config_builder_passes_layout_overrides(tmp_path):
    from changekit.engine.datamodule import ChangeDataModule

    truth = make_split(tmp_path / "val", ("t1", "t2", "cm"), ["q"])
    dm = ChangeDataModule(dataset="folder", root=str(tmp_path), dirs=["t1", "t2", "cm"], mean=[0.0] * 3,
                          std=[1.0] * 3, size_divisor=None)
    ds = dm.build_dataset("val")
    assert ds.dirs == ("t1", "t2", "cm") and len(ds) == 1
    _check(build_dataset("folder", tmp_path, "val", dirs=("t1", "t2", "cm")), truth)


def test_decode_label_encodings():
    raw = np.array([[0, 255], [255, 0]])
    np.testing.assert_array_equal(decode_label(raw, "0-255"), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(decode_label(raw, "binary"), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(decode_label(np.array([[0, 1, 255]]), "binary"), [[0, 1, 255]])
    np.testing.assert_array_equal(decode_label(np.array([[0, 1, 7]]), "0-1", ignore_value=7), [[0, 1, 255]])
    np.testing.assert_array_equal(decode_label(np.array([[0, 2, 255]]), "index", num_classes=3), [[0, 2, 255]])
    with pytest.raises(DataError, match=r"\{0, 3\}"):
        decode_label(np.array([[0, 3]]), "index", num_classes=3)


# ------------------------------------------------------------------------------------------ bad input
@pytest.fixture
def levir(tmp_path):
    make_split(tmp_path / "train", ("A", "B", "label"), ["p1", "p2", "p3"])
    return tmp_path


def test_missing_split_folder(levir):
    with pytest.raises(DataError, match=r"split folder .*/val is missing.*holds: train"):
        build_dataset("levir-cd", levir, "val")


def test_unmatched_names(levir):
    (levir / "train/B/p2.png").rename(levir / "train/B/p2_renamed.png")
    with pytest.raises(DataError, match=r"A have no partner in .*B: p2\b") as e:
        build_dataset("levir-cd", levir, "train")
    assert "p2_renamed" in str(e.value)


def test_missing_label(levir):
    (levir / "train/label/p3.png").unlink()
    with pytest.raises(DataError, match=r"no label in .*label: p3"):
        build_dataset("levir-cd", levir, "train")


def test_missing_label_folder(levir):
    import shutil

    shutil.rmtree(levir / "train/label")
    with pytest.raises(DataError, match=r"label folder .*train/label is missing.*labels: false"):
        build_dataset("levir-cd", levir, "train")


def test_dates_of_different_size(levir):
    Image.fromarray(np.zeros((H, W + 8, 3), np.uint8)).save(levir / "train/B/p2.png")
    ds = build_dataset("levir-cd", levir, "train")
    with pytest.raises(DataError, match=r"train/B/p2\.png: size 40x32 differs from date 1"):
        ds[1]


def test_label_size_mismatch(levir):
    Image.fromarray(np.zeros((H - 8, W), np.uint8)).save(levir / "train/label/p1.png")
    with pytest.raises(DataError, match=r"label/p1\.png: label size"):
        build_dataset("levir-cd", levir, "train")[0]


def test_label_values_outside_set(levir):
    Image.fromarray(np.full((H, W), 128, np.uint8)).save(levir / "train/label/p3.png")
    ds = build_dataset("levir-cd", levir, "train")
    with pytest.raises(DataError, match=r"label/p3\.png: label values \{128\}.*expected set \{0,255\}"):
        ds[2]


def test_band_count_mismatch(levir):
    ds = build_dataset("levir-cd", levir, "train", in_channels=4)
    with pytest.raises(DataError, match=r"train/A/p1\.png: has 3 band\(s\) but the config expects in_channels=4"):
        ds[0]
    save_array(levir / "train/B/p2.png", random_image(0, c=4))  # RGBA date 2 against an RGB date 1
    with pytest.raises(DataError, match=r"B/p2\.png: has 4 band"):
        build_dataset("levir-cd", levir, "train")[1]


def test_corrupt_image(levir):
    (levir / "train/A/p2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = build_dataset("levir-cd", levir, "train")
    with pytest.raises(DataError, match=r"train/A/p2\.png: cannot read image.*corrupt"):
        ds[1]


def test_empty_dataset(tmp_path):
    for d in ("A", "B", "label"):
        (tmp_path / "train" / d).mkdir(parents=True)
    with pytest.raises(DataError, match="empty"):
        build_dataset("levir-cd", tmp_path, "train")


def test_list_names_without_files(tmp_path):
    make_split(tmp_path, ("A", "B", "label"), ["a"])
    (tmp_path / "list").mkdir()
    (tmp_path / "list/test.txt").write_text("a.png\nghost.png\n")
    with pytest.raises(DataError, match=r"list/test\.txt have no file in .*A: ghost\.png"):
        build_dataset("whu-cd", tmp_path, "test")
    with pytest.raises(DataError, match=r"list/train\.txt is missing"):
        build_dataset("whu-cd", tmp_path, "train")


def test_validate_collects_every_problem(levir):
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(levir / "train/label/p1.png")
    (levir / "train/B/p3.png").write_bytes(b"not an image")
    ds = build_dataset("levir-cd", levir, "train")  # names fine: construction is fast and passes
    rep = ds.validate(full=True, raise_errors=False)
    assert len(rep.problems) == 2 and rep.sizes[(H, W)] == 1
    with pytest.raises(DataError, match=r"2 problems:(.|\n)*label/p1\.png(.|\n)*B/p3\.png"):
        ds.validate()
    assert ds.validate(full=False, raise_errors=False).problems[0].startswith(str(levir / "train/B/p3.png"))


def test_colour_and_palette_files(tmp_path):
    """Colour change masks (red new / green demolished) read as change under 0/255; palette images as RGB."""
    truth = make_split(tmp_path / "train", ("A", "B", "label"), ["c"])
    lab = truth["c"]
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = lab * 255
    rgb[:8, :, 0], rgb[:8, :, 1] = 0, lab[:8] * 255  # top rows: "green" changes
    Image.fromarray(rgb).save(tmp_path / "train/label/c.png")
    Image.fromarray(random_image(0)).convert("P").save(tmp_path / "train/A/c.png")
    item = build_dataset("levir-cd", tmp_path, "train")[0]
    np.testing.assert_array_equal(item["label"].numpy(), lab)
    assert item["t1"].shape == (3, H, W)
    with pytest.raises(DataError, match=r"label/c\.png: label has 3 bands"):
        build_dataset("folder", tmp_path, "train", label_encoding="index")[0]


@pytest.mark.parametrize("preset,arg", [("potsdam-tiles", "dirs"), ("potsdam-tiles", "suffixes"),
                                        ("loveda-official", "list_file"), ("oscd", "dirs"), ("sztaki", "split_dir"),
                                        ("bandon", "dirs"), ("potsdam", "split_dir")])
def test_a_dataset_refuses_arguments_it_cannot_honour(preset, arg, tmp_path):
    """Official layouts know their own folder names: a layout argument is refused by name, never dropped."""
    with pytest.raises(ConfigError, match=rf"{arg} do\(es\) not apply to this preset"):
        build_dataset(preset, tmp_path, "train", **{arg: ("a", "b", "c")})
