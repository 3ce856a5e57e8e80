"""Single-date semantic segmentation through the engine: labels, datasets, presets, SegmentationTask, CLI."""

import json

import numpy as np
import pytest
from helpers.engine_toy import fit_between_validations
from PIL import Image

from changekit.cli import main as changekit_main
from changekit.data.datasets import decode_label
from changekit.data.folders import SegmentationDataset
from changekit.data.presets import build_dataset, get_preset
from changekit.data.synthetic import LANDCOVER_CLASSES, write_segmentation_dataset
from changekit.errors import DataError


@pytest.fixture(scope="module")
def landcover(tmp_path_factory):
    return write_segmentation_dataset(tmp_path_factory.mktemp("seg") / "data", n_train=24, n_val=6, size=64, seed=0)


def test_reduce_zero_labels_as_mmseg():
    raw = np.array([[0, 1, 2], [6, 255, 3]])
    out = decode_label(raw, "reduce-zero", ignore_value=255, num_classes=6)
    assert out.tolist() == [[255, 0, 1], [5, 255, 2]]
    assert decode_label(raw, "reduce_zero_label", ignore_value=255, num_classes=6).tolist() == out.tolist()
    with pytest.raises(DataError, match="outside the expected set"):
        decode_label(np.array([[7]]), "reduce-zero", ignore_value=255, num_classes=6)


def test_presets_and_dataset_layout(landcover, tmp_path):
    for name, k in (("potsdam", 6), ("vaihingen", 6), ("loveda", 7)):
        p = get_preset(name)
        assert p.task == "segmentation" and p.num_classes == k == len(p.class_names) == len(p.palette)
        assert p.label_encoding == "reduce-zero" and p.dataset_class is SegmentationDataset
    ds = build_dataset("potsdam", landcover, "train", num_classes=4)
    assert len(ds) == 24 and ds.samples[0].name == "train_00000"
    item = ds[0]
    assert set(item) >= {"image", "label"} and "t1" not in item and "t2" not in item
    assert item["image"].shape == (3, 64, 64) and item["label"].shape == (64, 64)
    assert set(item["label"].unique().tolist()) <= {0, 1, 2, 3}  # stored 1..4 -> 0..3
    (tmp_path / "img_dir" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"label folder .*ann_dir/train is missing"):
        build_dataset("loveda", tmp_path, "train")
    with pytest.raises(DataError, match=r"image folder .*img_dir/val is missing"):
        build_dataset("loveda", tmp_path, "val")


def test_check_dataset_and_stats_on_a_segmentation_set(landcover, capsys):
    assert changekit_main(["check-dataset", "potsdam", str(landcover), "--split", "val", "--num-classes", "4"]) == 0
    out = capsys.readouterr().out
    assert "6 image(s) in 1 split(s) load cleanly" in out and "change ratio" not in out
    assert changekit_main(["stats", "potsdam", str(landcover), "--split", "train", "--num-classes", "4"]) == 0
    assert "24 images" in capsys.readouterr().out  # each tile once


def test_training_loss_falls_and_miou_rises(landcover):
    import lightning.pytorch as pl

    from changekit.engine.datamodule import ChangeDataModule
    from changekit.engine.seg_task import SegmentationTask

    pl.seed_everything(0, verbose=False)
    dm = ChangeDataModule(dataset="potsdam", root=str(landcover), num_classes=4, batch_size=4, eval_batch_size=6,
                          crop_size=48, test_split="val", augment={"rotate": False, "photometric": False})
    task = SegmentationTask("mcat-unet", {"size": "t", "drop_path_rate": 0.0}, num_classes=4,
                            optimizer={"lr": 2e-3}, schedule={"warmup_iters": 2, "warmup_start_factor": 0.1})
    task.print_tables = False
    losses, before, after = fit_between_validations(task, dm, max_steps=40)
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
    assert after["miou"] > before["miou"] + 0.15 and after["oa"] > 0.7, (before["miou"], after["miou"], after["oa"])
    assert after["pixels"] == 6 * 64 * 64 and "f1" not in after  # the whole set; no change-class figure
    assert len(after["per_class"]["iou"]) == len(LANDCOVER_CLASSES)


def test_cli_fit_test_predict_with_a_segmentation_config(landcover, tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "seg.yaml"
    cfg.write_text(f"""task: segmentation
model:
  arch: mcat-unet
  arch_args: {{size: t, drop_path_rate: 0.0}}
  num_classes: 4
  optimizer: {{lr: 0.002}}
data:
  dataset: potsdam
  root: {landcover}
  batch_size: 4
  eval_batch_size: 6
  num_workers: 0
  crop_size: 48
  augment: {{rotate: false, photometric: false}}
trainer:
  accelerator: cpu
  max_steps: 4
  val_check_interval: 4
  num_sanity_val_steps: 0
  enable_progress_bar: false
""")
    monkeypatch.chdir(tmp_path)
    assert changekit_main(["fit", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "val/miou" in out and "impervious" not in out  # class names only when the preset's count matches
    ckpt = next((tmp_path / "outputs" / "seg" / "checkpoints").glob("best_step*_miou*.ckpt"))
    assert changekit_main(["test", "-c", str(cfg), "--ckpt_path", str(ckpt)]) == 0
    metrics = json.loads(next((tmp_path / "outputs" / "seg").rglob("metrics_test.json")).read_text())
    assert 0.0 <= metrics["miou"] <= 1.0 and "f1" not in metrics
    assert changekit_main(["predict", "-c", str(cfg), "--ckpt_path", str(ckpt), "--output_dir", str(tmp_path / "p")]) == 0
    maps = sorted((tmp_path / "p" / "maps").glob("*.png"))
    assert len(maps) == 6 and all(Image.open(m).mode == "P" for m in maps)  # class indices shown in colour
    values = {int(v) for m in maps for v in np.unique(np.array(Image.open(m)))}
    assert values <= {1, 2, 3, 4}  # the labels' own encoding (reduce-zero: class + 1), as mmseg's format_only
    overlays = sorted((tmp_path / "p" / "overlays").glob("*.png"))
    assert len(overlays) == 6 and np.array(Image.open(overlays[0])).shape == (64, 64, 3)
    assert "class maps (palette PNGs, stored values 1..4" in capsys.readouterr().out
    # the trained checkpoint over a georeferenced image, streamed in windows
    import rasterio
    from helpers.toys import DEFAULT_CRS, default_transform

    tile = np.array(Image.open(sorted((landcover / "img_dir" / "val").glob("*.png"))[0]))
    img = np.tile(tile, (2, 3, 1))[:100, :150].transpose(2, 0, 1)
    with rasterio.open(tmp_path / "scene.tif", "w", driver="GTiff", width=150, height=100, count=3, dtype="uint8",
                       crs=DEFAULT_CRS, transform=default_transform()) as ds:
        ds.write(img)
    assert changekit_main(["scene", "--image", str(tmp_path / "scene.tif"), "--ckpt", str(ckpt), "--out",
                           str(tmp_path / "scene"), "--window", "64", "--overlap", "16", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "classes over 15000 valid pixels" in out and "polygons:" in out
    with rasterio.open(tmp_path / "scene" / "classes.tif") as c:
        assert c.read(1).max() < 4 and c.crs == DEFAULT_CRS
    assert (tmp_path / "scene" / "classes.gpkg").is_file()
    assert changekit_main(["scene", "--t1", str(tmp_path / "scene.tif"), "--t2", str(tmp_path / "scene.tif"),
                           "--ckpt", str(ckpt), "--out", str(tmp_path / "x")]) == 2
    assert "give one image (--image)" in capsys.readouterr().err


def test_loveda_from_the_official_download(tmp_path, capsys):
    """loveda-official: Train/Val/Test x Urban/Rural folders read in place; areas apart or together; Test unlabelled."""
    from changekit.data.io import write_png

    rng = np.random.default_rng(0)
    ids = {"Urban": [3514, 3515], "Rural": [0, 1, 2]}
    for split in ("Train", "Test"):
        for area, nums in ids.items():
            for n in nums:
                write_png(tmp_path / split / area / "images_png" / f"{n}.png", rng.integers(0, 255, (16, 16, 3), np.uint8))
                if split == "Train":
                    write_png(tmp_path / split / area / "masks_png" / f"{n}.png", rng.integers(0, 8, (16, 16), np.uint8))
    both = build_dataset("loveda-official", tmp_path, "train")
    assert [s.name for s in both.samples] == ["0", "1", "2", "3514", "3515"] and both.has_labels
    item = both[0]
    raw = np.array(Image.open(tmp_path / "Train" / "Rural" / "masks_png" / "0.png")).astype(np.int64)
    assert item["label"].tolist() == np.where(raw == 0, 255, raw - 1).tolist()  # 0 no-data -> ignored
    assert len(build_dataset("loveda-official", tmp_path, "train", area="urban")) == 2
    test = build_dataset("loveda-official", tmp_path, "test", labels="auto")
    assert len(test) == 5 and not test.has_labels and "label" not in test[0]
    with pytest.raises(DataError, match=r"Val/Urban/images_png is missing"):
        build_dataset("loveda-official", tmp_path, "val")
    write_png(tmp_path / "Train" / "Urban" / "images_png" / "1.png", np.zeros((16, 16, 3), np.uint8))
    write_png(tmp_path / "Train" / "Urban" / "masks_png" / "1.png", np.zeros((16, 16), np.uint8))
    with pytest.raises(DataError, match=r"1 image id\(s\) occur in both Train/Urban and Train/Rural: 1"):
        build_dataset("loveda-official", tmp_path, "train")
    assert changekit_main(["check-dataset", "loveda-official", str(tmp_path), "--split", "train", "--area", "rural"]) == 0
    assert "3 image(s) in 1 split(s) load cleanly" in capsys.readouterr().out
