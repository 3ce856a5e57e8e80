"""`changekit scene --image`: a single-date segmentation model over one large georeferenced image.

The toy model's class is the brightest band of each pixel (a pointwise model), so the blended per-class
probabilities have the same argmax as one forward pass over the whole image: the class raster is known exactly.
"""

from __future__ import annotations

import functools
import json
import socket

import fiona
import numpy as np
import pytest
import rasterio
import torch
from helpers.toys import (
    CLASS_IMAGE_SIZE as SIZE,
)
from helpers.toys import (
    BrightestBand,
    DiffModel,
    SegConvModel,
    ddp_worker,
    write_class_image,
    write_scene_pair,
)
from rasterio.windows import Window

from changekit.cli import main as cli
from changekit.data.presets import class_legend
from changekit.errors import ConfigError
from changekit.geo.scene import run_scene

KW = dict(window=128, overlap=32, batch_size=3, progress=False, mean=[0.0] * 3, std=[255.0] * 3, scale="none")
NAMES = ["red roof", "green", "blue water"]
PALETTE = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    d = tmp_path_factory.mktemp("seg_scene")
    expected = write_class_image(d / "image.tif")
    return d / "image.tif", expected


def _model():
    m = BrightestBand()
    m.changekit_info = {"task": "segmentation", "class_names": NAMES, "palette": PALETTE}
    return m


def test_class_raster_confidence_and_polygons(image, tmp_path):
    path, expected = image
    s = run_scene(path, None, tmp_path, model=_model(), **KW)
    assert s["task"] == "segmentation" and s["windows"] == 3 * 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.geojson", "classes.gpkg", "classes.tif",
                                                         "confidence.tif", "scene.json"]
    with rasterio.open(path) as src, rasterio.open(tmp_path / "classes.tif") as c, \
            rasterio.open(tmp_path / "confidence.tif") as p:
        assert c.crs == src.crs and c.transform == src.transform and c.shape == src.shape
        assert c.nodata == 255 and c.dtypes == ("uint8",)
        classes = c.read(1)
        assert np.array_equal(classes, expected)  # the blend of probabilities keeps the pointwise argmax
        cmap = c.colormap(1)
        assert [list(cmap[i][:3]) for i in range(3)] == PALETTE
        assert json.loads(c.tags()["CLASS_NAMES"]) == NAMES
        conf = p.read(1)
        assert conf.min() >= 254  # 20 x (220 - 30) / 255 apart: the chosen class is certain everywhere
    assert s["class_pixels"] == {n: int((expected == i).sum()) for i, n in enumerate(NAMES)}
    assert s["valid_pixels"] == SIZE[0] * SIZE[1] and s["nodata_pixels"] == 0
    record = json.loads((tmp_path / "scene.json").read_text())
    assert record["task"] == "segmentation" and record["image"] == str(path.resolve()) and "t1" not in record
    assert record["class_names"] == NAMES and record["palette"] == PALETTE and "threshold" not in record
    with fiona.open(tmp_path / "classes.gpkg", layer="classes") as src:
        feats = list(src)
        assert src.crs_wkt
    assert len(feats) == s["polygons"] == 4  # three rectangles and the background (holed; the green one merged in)
    by_class: dict[int, int] = {}
    for f in feats:
        props = f["properties"]
        assert props["class_name"] == NAMES[props["class"]]
        by_class[props["class"]] = by_class.get(props["class"], 0) + props["pixels"]
    assert by_class == {i: int((expected == i).sum()) for i in range(3)}
    one = next(f for f in feats if f["properties"]["class"] == 2)
    assert one["properties"]["pixels"] == 90 * 70 and one["properties"]["area"] == pytest.approx(90 * 70 * 100.0)


def test_nodata_and_resume_give_the_same_bytes(tmp_path):
    expected = write_class_image(tmp_path / "img.tif", nodata=0)
    with rasterio.open(tmp_path / "img.tif", "r+") as ds:  # a hole of no data
        ds.write(np.zeros((3, 40, 70), np.uint8), window=Window(100, 120, 70, 40))
    full = run_scene(tmp_path / "img.tif", None, tmp_path / "full", model=_model(), **KW)
    with rasterio.open(tmp_path / "full" / "classes.tif") as c:
        classes = c.read(1)
    assert (classes[120:160, 100:170] == 255).all() and full["nodata_pixels"] == 40 * 70
    keep = classes != 255
    assert np.array_equal(classes[keep], expected[keep])

    class Stop(Exception):
        pass

    def stop(n):
        if n == 6:
            raise Stop

    with pytest.raises(Stop):
        run_scene(tmp_path / "img.tif", None, tmp_path / "res", model=_model(), on_window=stop, **KW)
    assert (tmp_path / "res" / ".partial").exists() and not (tmp_path / "res" / "classes.tif").exists()
    res = run_scene(tmp_path / "img.tif", None, tmp_path / "res", model=_model(), **KW)
    assert res["strips_resumed"] >= 1 and res["windows_run"] < full["windows_run"]
    for name in ("classes.tif", "confidence.tif"):
        assert (tmp_path / "res" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()


def test_inputs_must_match_the_model(image, tmp_path):
    path, _ = image
    write_scene_pair(tmp_path / "t1.tif", tmp_path / "t2.tif", size=(64, 64))
    with pytest.raises(ConfigError, match=r"single-date segmentation model: give one image \(--image\)"):
        run_scene(tmp_path / "t1.tif", tmp_path / "t2.tif", tmp_path / "a", model=_model(), **KW)
    with pytest.raises(ConfigError, match=r"change model: give the two dates \(--t1 and --t2\)"):
        run_scene(path, None, tmp_path / "b", model=DiffModel(), **KW)
    with pytest.raises(ConfigError, match="--threshold is for change models"):
        run_scene(path, None, tmp_path / "c", model=_model(), threshold=0.3, **KW)
    with pytest.raises(ConfigError, match="nothing to align"):
        run_scene(path, None, tmp_path / "d", model=_model(), align=True, **KW)
    assert not any((tmp_path / d / "classes.tif").exists() for d in "abcd")


def test_class_legend_comes_from_the_record_the_preset_or_defaults():
    names, palette = class_legend({"dataset": "potsdam"}, 6)
    assert names[0] == "impervious_surface" and palette[0] == [255, 255, 255]
    names, palette = class_legend({"dataset": "potsdam"}, 4)  # a class count the preset does not have
    assert names == ["class 0", "class 1", "class 2", "class 3"] and len({tuple(c) for c in palette}) == 4
    assert class_legend({"class_names": NAMES, "palette": PALETTE}, 3) == (NAMES, PALETTE)


def test_cli_image_option(image, tmp_path, capsys):
    path, _ = image
    assert cli(["scene", "--image", str(path), "--t1", str(path), "--config", "fc_siam_diff", "--out",
                str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err
    assert cli(["scene", "--t1", str(path), "--config", "fc_siam_diff", "--out", str(tmp_path)]) == 2
    assert "--image (the one image of a segmentation model)" in capsys.readouterr().err


def test_two_processes_give_identical_class_rasters(image, tmp_path):
    path, _ = image
    one = run_scene(path, None, tmp_path / "one", model=SegConvModel(seed=3), **KW)
    assert min(one["class_pixels"].values()) > 0  # every class occurs: the blend decides real boundaries
    kwargs = {**KW, "model_factory": functools.partial(SegConvModel, seed=3)}
    kwargs.pop("progress")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = (2, port, str(path), "", str(tmp_path / "two"), kwargs)
    torch.multiprocessing.start_processes(ddp_worker, args=args, nprocs=2, join=True, start_method="fork")
    for name in ("classes.tif", "confidence.tif", "classes.geojson"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name


def test_bf16_classes_agree_with_fp32(image, tmp_path):
    path, _ = image
    a = run_scene(path, None, tmp_path / "a", model=SegConvModel(seed=3), **KW)
    b = run_scene(path, None, tmp_path / "b", model=SegConvModel(seed=3), precision="bf16", **KW)
    assert b["precision"] in ("bf16", "fp32") and a["task"] == b["task"] == "segmentation"
    with rasterio.open(tmp_path / "a" / "classes.tif") as x, rasterio.open(tmp_path / "b" / "classes.tif") as y:
        assert (x.read(1) == y.read(1)).mean() > 0.99
