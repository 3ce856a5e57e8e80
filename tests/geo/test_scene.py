"""`changekit scene`: georeferencing, nodata, grid checks, seam-free blending, resume, 2 processes, polygons."""

from __future__ import annotations

import functools
import socket

import numpy as np
import pytest
import rasterio
import shapely
import torch
from helpers.toys import ConstantModel, ConvModel, DiffModel, ddp_worker, write_scene_pair
from rasterio.transform import from_origin
from shapely.geometry import shape

from changekit.errors import ConfigError, DataError
from changekit.geo.scene import run_scene
from changekit.geo.vectorize import change_polygons

SIZE = (300, 430)  # not a multiple of the window: edge windows are pulled back
KW = dict(window=128, overlap=32, batch_size=3, progress=False, mean=[0.0] * 3, std=[255.0] * 3, scale="none")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair")
    write_scene_pair(d / "t1.tif", d / "t2.tif", d / "label.tif", size=SIZE, seed=3, changes_per_mpx=150)
    return d


def _bytes(p):
    return p.read_bytes()


def test_outputs_keep_crs_transform_and_are_cog_ready(pair, tmp_path):
    s = run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path, model=DiffModel(), **KW)
    with rasterio.open(pair / "t1.tif") as src, rasterio.open(tmp_path / "change.tif") as c, \
            rasterio.open(tmp_path / "probability.tif") as p, rasterio.open(pair / "label.tif") as lab:
        for ds in (c, p):
            assert ds.crs == src.crs and ds.transform == src.transform and ds.shape == src.shape
            assert ds.dtypes == ("uint8",) and ds.profile["tiled"] and ds.block_shapes[0] == (512, 512)
            assert ds.compression.name.lower() == "deflate"
        assert c.nodata == 255
        change, label = c.read(1), lab.read(1)
        assert set(np.unique(change)) <= {0, 1}
        assert (change == label).mean() > 0.995  # the difference detector finds the synthetic buildings
        assert int(change.sum()) == s["changed_pixels"]
        assert np.array_equal(change, (p.read(1).astype(int) >= 128).astype(np.uint8))
    assert not (tmp_path / ".partial").exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["change.tif", "changes.geojson", "changes.gpkg", "probability.tif",
                                                         "scene.json"]


def test_nodata_in_either_date_is_nodata_in_output_also_as_cog(tmp_path):
    write_scene_pair(tmp_path / "a.tif", tmp_path / "b.tif", size=(200, 260), seed=1, nodata=0)
    with rasterio.open(tmp_path / "a.tif", "r+") as a:  # one band of date 1 missing in a block
        band = a.read(2)
        band[10:60, 20:90] = 0
        a.write(band, 2)
    with rasterio.open(tmp_path / "b.tif", "r+") as b:  # all of date 2 missing in another block
        arr = b.read()
        arr[:, 150:190, 200:250] = 0
        b.write(arr)
    run_scene(tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "out", model=ConstantModel(0.9), cog=True,
              vectors=False, **KW)
    with rasterio.open(tmp_path / "out" / "change.tif") as c, rasterio.open(tmp_path / "out" / "probability.tif") as p:
        change, mask = c.read(1), p.read_masks(1)
        assert c.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and c.nodata == 255
    expect = np.zeros((200, 260), bool)
    expect[10:60, 20:90] = True
    expect[150:190, 200:250] = True
    assert np.array_equal(change == 255, expect)
    assert np.array_equal(mask == 0, expect)
    assert (change[~expect] == 1).all()


def test_mismatched_grids_are_refused_then_aligned(pair, tmp_path):
    # date 2 on a grid shifted by (7, -5) pixels and a different size
    with rasterio.open(pair / "t2.tif") as src:
        arr, prof, T = src.read(), src.profile, src.transform
    prof.update(width=SIZE[1] - 20, height=SIZE[0] - 10, transform=from_origin(T.c + 7 * T.a, T.f + 5 * T.e, T.a, -T.e))
    with rasterio.open(tmp_path / "t2s.tif", "w", **prof) as dst:
        dst.write(arr[:, 5:SIZE[0] - 5, 7:SIZE[1] - 13])
    with pytest.raises(DataError) as e:
        run_scene(pair / "t1.tif", tmp_path / "t2s.tif", tmp_path / "x", model=DiffModel(), **KW)
    msg = str(e.value)
    assert "430 x 300 px" in msg and "410 x 290 px" in msg and "--align" in msg
    s = run_scene(pair / "t1.tif", tmp_path / "t2s.tif", tmp_path / "al", model=DiffModel(), align=True,
                  resampling="nearest", **KW)
    assert s["aligned"]
    run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path / "ref", model=DiffModel(), **KW)
    with rasterio.open(tmp_path / "al" / "change.tif") as a, rasterio.open(tmp_path / "ref" / "change.tif") as r:
        assert a.transform == r.transform and a.shape == r.shape
        al, ref = a.read(1), r.read(1)
    covered = np.zeros(SIZE, bool)
    covered[5:SIZE[0] - 5, 7:SIZE[1] - 13] = True
    assert (al[~covered] == 255).all()
    inner = covered.copy()  # away from the new no-data border the model sees the same pixels
    inner[:8], inner[-8:], inner[:, :10], inner[:, -16:] = False, False, False, False
    assert (al[inner] == ref[inner]).mean() > 0.999


def test_constant_model_is_seam_free(pair, tmp_path):
    run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path, model=ConstantModel(0.7), vectors=False, **KW)
    with rasterio.open(tmp_path / "probability.tif") as p:
        prob = p.read(1)
    assert (prob == prob[0, 0]).all() and abs(int(prob[0, 0]) - 0.7 * 255) <= 0.51


def test_blended_windows_match_whole_image_inference(pair, tmp_path):
    model = ConvModel(seed=1).eval()
    run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path, model=model, vectors=False, **KW)
    with rasterio.open(pair / "t1.tif") as a, rasterio.open(pair / "t2.tif") as b:
        x1 = torch.from_numpy(a.read().astype(np.float32) / 255)[None]
        x2 = torch.from_numpy(b.read().astype(np.float32) / 255)[None]
    with torch.no_grad():
        whole = torch.softmax(model(x1, x2), 1)[0, 1].numpy()
    with rasterio.open(tmp_path / "probability.tif") as p:
        prob = p.read(1).astype(int)
    diff = np.abs(prob - np.rint(whole * 255).astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_interrupted_run_resumes_to_identical_bytes(pair, tmp_path):
    full = run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path / "full", model=DiffModel(), **KW)

    class Stop(Exception):
        pass

    per_strip = full["windows"] // full["strips"]

    def stop_after(n):
        if n == per_strip + 2:  # inside strip 1
            raise Stop

    with pytest.raises(Stop):
        run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path / "res", model=DiffModel(), on_window=stop_after, **KW)
    assert (tmp_path / "res" / ".partial" / "strip_00000.u16").exists()
    assert not (tmp_path / "res" / "change.tif").exists()
    with pytest.raises(ConfigError, match="--restart"):  # other settings must not mix with the unfinished run
        run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path / "res", model=DiffModel(), **{**KW, "overlap": 16})
    res = run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path / "res", model=DiffModel(), **KW)
    assert res["strips_resumed"] == 1 and res["windows_run"] == full["windows_run"] - per_strip
    for name in ("change.tif", "probability.tif", "changes.geojson"):
        assert _bytes(tmp_path / "res" / name) == _bytes(tmp_path / "full" / name), name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_identical_output(pair, tmp_path):
    one = run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path / "one", model=ConvModel(seed=2), **KW)
    kwargs = {**KW, "model_factory": functools.partial(ConvModel, seed=2)}
    kwargs.pop("progress")
    # fork: the children start in a fraction of a second (spawn would import torch twice more)
    args = (2, _free_port(), str(pair / "t1.tif"), str(pair / "t2.tif"), str(tmp_path / "two"), kwargs)
    torch.multiprocessing.start_processes(ddp_worker, args=args, nprocs=2, join=True, start_method="fork")
    assert one["strips"] >= 3
    for name in ("change.tif", "probability.tif", "changes.geojson"):
        assert _bytes(tmp_path / "two" / name) == _bytes(tmp_path / "one" / name), name


def test_polygons_valid_with_areas_of_changed_pixels(pair, tmp_path):
    s = run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path, model=DiffModel(), **KW)
    with rasterio.open(tmp_path / "change.tif") as c:
        changed = int((c.read(1) == 1).sum())
        px_area = abs(c.transform.a * c.transform.e)
        crs = c.crs
    import fiona

    for name in ("changes.geojson", "changes.gpkg"):
        with fiona.open(tmp_path / name) as src:
            assert rasterio.crs.CRS.from_wkt(src.crs_wkt) == crs
            feats = list(src)
        geoms = [shape(f.geometry) for f in feats]
        assert all(g.is_valid and g.geom_type == "Polygon" for g in geoms)
        assert sum(f.properties["area"] for f in feats) == pytest.approx(changed * px_area)
        assert sum(g.area for g in geoms) == pytest.approx(changed * px_area)
        assert sum(f.properties["pixels"] for f in feats) == changed
    assert s["polygons"] == len(feats) > 10
    # blocks smaller than the polygons: pieces cut at block edges are merged back
    whole = list(change_polygons(tmp_path / "change.tif"))
    small = list(change_polygons(tmp_path / "change.tif", block=32))
    assert len(small) == len(whole)
    assert shapely.union_all([g for g, _ in small]).symmetric_difference(shapely.union_all([g for g, _ in whole])).area == 0
    # --min-area drops small polygons (areas in CRS units: 10 m pixels -> 100 m^2 each)
    big = run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path / "big", model=DiffModel(), min_area=400 * px_area,
                    simplify=10.0, **KW)
    with fiona.open(tmp_path / "big" / "changes.geojson") as src:
        areas = [f.properties["area"] for f in src]
    assert areas and min(areas) >= 400 * px_area and big["polygons_dropped"] > 0


def test_preview_of_a_scene_larger_than_the_preview_keeps_every_change(tmp_path):
    """The preview is decimated; a single changed pixel must survive the reduction (max filter)."""
    import numpy as np
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin

    from changekit.geo.preview import preview_png

    profile = dict(driver="GTiff", height=64, width=96, crs="EPSG:32631", transform=from_origin(0, 0, 1, 1))
    change = np.zeros((64, 96), np.uint8)
    change[33, 50] = 1
    change[:4, :4] = 255
    with rasterio.open(tmp_path / "c.tif", "w", count=1, dtype="uint8", nodata=255, **profile) as dst:
        dst.write(change, 1)
    with rasterio.open(tmp_path / "img.tif", "w", count=3, dtype="uint8", **profile) as dst:
        dst.write(np.full((3, 64, 96), 100, np.uint8))
    png = preview_png(tmp_path / "img.tif", tmp_path / "c.tif", tmp_path / "p.png", max_side=24)
    rgb = np.array(Image.open(png))
    assert rgb.shape == (16, 24, 3)
    red = (rgb[..., 0] > 150) & (rgb[..., 1] < 100)
    assert red.sum() == 1 and red[33 // 4, 50 // 4]
    assert (rgb[0, 0] == [40, 40, 40]).all()  # nodata drawn grey


def test_scene_precision_bf16_agrees_and_is_recorded(pair, tmp_path):
    import json

    from changekit.deploy.optimize import cpu_has_native_bf16

    torch.manual_seed(0)
    model = ConvModel()
    s32 = run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path / "a", model=model, **KW)
    s16 = run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path / "b", model=model, precision="bf16", **KW)
    want = "bf16" if cpu_has_native_bf16() else "fp32"
    assert s32["precision"] == "fp32" and s16["precision"] == want
    assert json.loads((tmp_path / "b" / "scene.json").read_text())["precision"] == want
    # the default is auto: a model of no changekit family has no reduced precision validated, so fp32, and why
    auto = json.loads((tmp_path / "a" / "scene.json").read_text())
    assert auto["precision"] == "fp32" and "ConvModel has no reduced precision validated" in auto["precision_reason"]
    # an untrained toy sits near p = 0.5 everywhere, so compare probabilities (the 99.9 % map agreement is asserted
    # on trained models: tests/test_demo.py, tests/models/test_ban.py)
    with rasterio.open(tmp_path / "a" / "probability.tif") as a, rasterio.open(tmp_path / "b" / "probability.tif") as b:
        pa, pb = a.read(1).astype(np.float32), b.read(1).astype(np.float32)
        d = np.abs(pa - pb)  # probabilities stored as 0..255
        assert d.mean() < 2.0 and np.percentile(d, 99) <= 6 and d.max() <= 16  # bf16 keeps ~3 digits
    with pytest.raises(ConfigError, match="precision 'int4'"):
        run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path / "c", model=ConvModel(), precision="int4", **KW)


def test_an_int8_scene_agrees_resumes_and_is_recorded(pair, tmp_path, monkeypatch):
    """--precision int8 on BAN (its ViT's linear layers quantised; the threshold lowered so this tiny ViT has some):
    the change map agrees with fp32, the run resumes to the same bytes (the resume record fingerprints int8 weights)
    and scene.json records int8."""
    import json

    import changekit
    import changekit.deploy.optimize as optimize

    monkeypatch.setattr(optimize, "INT8_MIN_WEIGHTS", 1024)
    fm = dict(kind="clip", patch_size=8, img_size=64, embed_dim=64, num_heads=2, num_layers=3, out_indices=(0, 1, 2))

    def model():
        torch.manual_seed(0)
        return changekit.build_model("ban", fm=dict(fm), bitab="mit-b0")

    kw = {**KW, "mean": "clip", "std": "clip"}
    f32 = run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path / "f", model=model(), precision="fp32", **kw)
    stop = f32["windows"] // f32["strips"] + 1  # a window into the second strip

    def interrupt(n: int) -> None:
        if n == stop:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path / "q", model=model(), precision="int8",
                  on_window=interrupt, **kw)
    s = run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path / "q", model=model(), precision="int8", **kw)
    assert s["strips_resumed"] >= 1 and s["precision"] == "int8"
    run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path / "r", model=model(), precision="int8", **kw)
    with rasterio.open(tmp_path / "f" / "change.tif") as f, rasterio.open(tmp_path / "q" / "change.tif") as q, \
            rasterio.open(tmp_path / "r" / "change.tif") as r:
        qa = q.read(1)
        assert (f.read(1) == qa).mean() >= 0.995 and np.array_equal(qa, r.read(1))
    assert json.loads((tmp_path / "q" / "scene.json").read_text())["precision"] == "int8"


def test_bf16_can_be_declared_absent_as_on_an_avx2_machine(pair, tmp_path, monkeypatch):
    """CHANGEKIT_CPU_BF16=0 makes this machine answer as one without native bf16 (AVX2 only): bf16 falls back to
    fp32 with a warning, as it would there; =1 declares it present."""
    from changekit.deploy.optimize import cpu_has_native_bf16

    monkeypatch.setenv("CHANGEKIT_CPU_BF16", "0")
    assert cpu_has_native_bf16() is False
    with pytest.warns(UserWarning, match="no native bfloat16 support: running fp32"):
        s = run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path / "a", model=ConvModel(), precision="bf16", **KW)
    assert s["precision"] == "fp32"
    monkeypatch.setenv("CHANGEKIT_CPU_BF16", "1")
    assert cpu_has_native_bf16() is True
