"""`changekit demo` end to end with a miniature recipe (the full recipe is exercised by `make demo`)."""

import json

import numpy as np


def test_demo_writes_every_output(tmp_path, capsys):
    from PIL import Image

    from changekit.cli import main as cli

    code = cli(["demo", "--out", str(tmp_path / "demo"), "--size", "32", "--n-train", "8", "--n-val", "2",
                "--n-test", "3", "--crop", "32", "--batch-size", "4", "--steps", "4", "--val-every", "2",
                "--threads", "1", "--no-progress", "--figure-samples", "2", "--scene-size", "192", "256"])
    assert code == 0
    out = tmp_path / "demo"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("precision", "recall", "f1", "iou", "oa", "kappa", "miou", "mf1"):
        assert key in metrics
    assert metrics["eval_mode"].startswith("whole") and metrics["pixels"] == 3 * 32 * 32
    assert "evaluation: whole" in capsys.readouterr().out
    from changekit import load_model

    info = load_model(out / "model.ckpt").changekit_info
    assert info["arch"] == "fc_siam_diff" and info["mean"] is not None
    maps = sorted((out / "predictions" / "maps").glob("*.png"))
    assert len(maps) == 3 and len(list((out / "predictions" / "overlays").glob("*.png"))) == 3
    assert set(np.unique(np.array(Image.open(maps[0])))) <= {0, 255}
    fig = np.array(Image.open(out / "figure.png"))
    assert fig.shape[0] > 300 and fig.shape[1] > 300
    # the large-scene step: georeferenced rasters, polygons and a preview
    import rasterio

    for name in ("change.tif", "probability.tif", "changes.geojson", "changes.gpkg", "preview.png"):
        assert (out / "scene" / name).is_file(), name
    with rasterio.open(out / "scene" / "change.tif") as c, rasterio.open(out / "scene" / "t1.tif") as t1:
        assert c.crs == t1.crs and c.transform == t1.transform and c.shape == (192, 256)
    # the real-imagery step: the shipped Sentinel-2 model on the vendored OSCD cities
    real = json.loads((out / "sentinel2.json").read_text())["cities"]
    assert set(real) == {"paris", "lasvegas"} and "f1" in real["paris"] and "f1" not in real["lasvegas"]
    for city in real:
        rec = json.loads((out / city / "scene.json").read_text())
        assert rec["display"]["bands"] == [4, 3, 2] and (out / city / "changes.geojson").is_file()
    with rasterio.open(out / "paris" / "change.tif") as c:
        assert c.crs.to_epsg() == 4326 and c.shape == (408, 390)
    # polygons in degrees carry their geodesic area: about 9 x 13 m per pixel at Paris' latitude
    feats = json.loads((out / "paris" / "changes.geojson").read_text())["features"]
    assert feats and all(90 < f["properties"]["area_m2"] / f["properties"]["pixels"] < 140 for f in feats)
    assert np.array(Image.open(out / "figure_sentinel2.png")).shape[0] > 300


def test_bf16_inference_agrees_with_fp32_on_the_demo_test_split(tmp_path):
    """optimize_for_inference(bf16): the argmax change maps of the demo's trained model agree with fp32 on
    >= 99.9 % of the test split's pixels (fp32 where the CPU has no native bf16); int8 on all of them."""
    import torch

    from changekit import load_model, optimize_for_inference
    from changekit.cli import main as cli
    from changekit.data import ChangeDataset
    from changekit.data.transforms import build_transforms

    assert cli(["demo", "--out", str(tmp_path / "d"), "--size", "64", "--n-train", "16", "--n-val", "2",
                "--n-test", "6", "--crop", "64", "--batch-size", "4", "--steps", "30", "--val-every", "30",
                "--threads", "1", "--no-progress", "--figure-samples", "1", "--scene-size", "96", "96"]) == 0
    model = load_model(tmp_path / "d" / "model.ckpt")
    info = model.changekit_info
    ds = ChangeDataset(tmp_path / "d" / "data", "test",
                       transforms=build_transforms(train=False, mean=info["mean"], std=info["std"]))
    t1 = torch.stack([ds[i]["t1"] for i in range(len(ds))])
    t2 = torch.stack([ds[i]["t2"] for i in range(len(ds))])
    with torch.inference_mode():
        ref = model.eval()(t1, t2).argmax(1)
    fast = optimize_for_inference(model, precision="bf16")
    out = fast(t1, t2)
    assert out.dtype == torch.float32 and out.shape[-2:] == t1.shape[-2:]
    assert (out.argmax(1) == ref).float().mean() >= 0.999
    assert fast.num_classes == model.num_classes  # attributes pass through
    # int8 quantises linear layers of >= 65,536 weights; FC-Siam-diff has none (all convolutions): the same maps
    int8 = optimize_for_inference(load_model(tmp_path / "d" / "model.ckpt"), precision="int8")
    assert int8.precision == "int8" and torch.equal(int8(t1, t2).argmax(1), ref)


def test_segmentation_demo_writes_every_output(tmp_path, capsys):
    """`changekit demo --task segmentation`: land cover -> MCAT-UNet-T -> mIoU, class maps, figure, scene --image."""
    import rasterio
    from PIL import Image

    from changekit.cli import main as cli

    out = tmp_path / "seg"
    code = cli(["demo", "--task", "segmentation", "--out", str(out), "--size", "48", "--n-train", "8", "--n-val", "2",
                "--crop", "32", "--batch-size", "4", "--steps", "4", "--val-every", "2", "--threads", "1",
                "--no-progress", "--figure-samples", "2", "--scene-size", "160", "224"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"miou", "mf1", "oa", "kappa"} <= set(metrics) and "f1" not in metrics
    assert metrics["class_names"] == ["ground", "tree", "road", "building"] and metrics["pixels"] == 2 * 48 * 48
    printed = capsys.readouterr().out
    assert "building" in printed and "scene mIoU" in printed
    maps = sorted((out / "predictions" / "maps").glob("*.png"))
    assert len(maps) == 2 and Image.open(maps[0]).mode == "P"
    assert np.array(Image.open(out / "figure.png")).shape[0] > 300
    with rasterio.open(out / "scene" / "classes.tif") as c, rasterio.open(out / "scene" / "image.tif") as img:
        assert c.crs == img.crs and c.shape == (160, 224) and c.read(1).max() < 4
        assert c.colormap(1)[3][:3] == (220, 60, 40)  # the land-cover palette (building)
    assert (out / "scene" / "classes.gpkg").is_file() and (out / "scene" / "preview.png").is_file()
    assert cli(["demo", "--task", "segmentation", "--dice", "0.5", "--out", str(tmp_path / "x")]) == 2
    assert "--dice is for the change demo" in capsys.readouterr().err


def test_a_seeded_demo_gives_the_same_figures_and_says_when_the_safety_cap_cut_it(tmp_path, capsys):
    """The wall-clock cap is a safety net only: two runs with one seed agree to the last digit; a run the cap
    stops early says so and records it."""
    from changekit.cli import main as cli

    mini = ["--size", "32", "--n-train", "8", "--n-val", "2", "--n-test", "3", "--crop", "32", "--batch-size", "4",
            "--steps", "6", "--val-every", "3", "--threads", "1", "--no-progress", "--no-scene", "--no-real",
            "--figure-samples", "1"]
    runs = []
    for name in ("a", "b"):
        assert cli(["demo", "--out", str(tmp_path / name), *mini]) == 0
        runs.append(json.loads((tmp_path / name / "metrics.json").read_text()))
    for m in runs:
        m.pop("train_seconds")
    assert runs[0] == runs[1] and runs[0]["train_cut_short"] is False
    assert "safety cap" not in capsys.readouterr().out
    assert cli(["demo", "--out", str(tmp_path / "cut"), *mini, "--max-minutes", "0.00001"]) == 0
    assert "safety cap stopped training after 1 of 6 iterations" in capsys.readouterr().out
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["train_cut_short"] is True
