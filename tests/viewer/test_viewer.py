"""`changekit view`: the server's routes over a finished scene, its refusals, and the page in a real browser."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers.toys import DiffModel, write_scene_pair

from changekit.cli import main as cli
from changekit.errors import ConfigError
from changekit.geo.scene import run_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("view")
    write_scene_pair(d / "t1.tif", d / "t2.tif", size=(256, 320), seed=5, changes_per_mpx=250)
    run_scene(d / "t1.tif", d / "t2.tif", d / "out", model=DiffModel(), window=128, overlap=32, progress=False,
              mean=[0.0] * 3, std=[255.0] * 3, scale="none")
    return d / "out"


@pytest.fixture(scope="module")
def client(scene):
    from starlette.testclient import TestClient

    from changekit.viewer import create_app

    return TestClient(create_app(scene))


def _tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    return int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)


def test_scene_record_tiles_and_outside(client, scene):
    rec = client.get("/scene.json").json()
    assert rec["format"] == "changekit-scene/1" and rec["bands"] == [1, 2, 3] and rec["crs"] == "EPSG:32631"
    w, s, e, n = rec["bounds"]
    assert -180 <= w < e <= 180 and -90 <= s < n <= 90
    x, y = _tile_of((w + e) / 2, (s + n) / 2, 14)
    for layer in ("t1", "t2", "change", "probability"):
        r = client.get(f"/tiles/{layer}/14/{x}/{y}.png")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    import io

    from PIL import Image

    change = np.array(Image.open(io.BytesIO(client.get(f"/tiles/change/14/{x}/{y}.png").content)).convert("RGBA"))
    assert ((change[..., 0] == 230) & (change[..., 3] > 0)).any()  # changed pixels drawn red
    assert client.get("/tiles/t1/14/0/0.png").status_code == 204  # outside the scene: no content


def test_changes_are_wgs84_and_sorted_by_area(client):
    gj = client.get("/polygons.geojson").json()
    feats = gj["features"]
    assert len(feats) > 5
    areas = [f["properties"]["area"] for f in feats]
    assert areas == sorted(areas, reverse=True) and feats[0]["properties"]["rank"] == 1
    lon, lat = feats[0]["geometry"]["coordinates"][0][0]
    assert -180 <= lon <= 180 and -90 <= lat <= 90 and abs(lon) < 10  # UTM 31N: longitudes near 0..6
    assert client.get("/changes.geojson").json() == gj  # the output file's own name serves the same
    assert feats[0]["properties"]["area_m2"] == pytest.approx(feats[0]["properties"]["area"])  # UTM: metres


def test_no_path_reaches_the_file_system(client):
    for url in ("/tiles/../../etc/passwd", "/tiles/%2e%2e/1/1/1.png", "/tiles/secret/1/1/1.png",
                "/static/../../pyproject.toml", "/scene.json/../change.tif", "/t1.tif"):
        assert client.get(url).status_code == 404, url


def test_only_a_finished_scene_is_served(tmp_path, scene, capsys):
    from changekit.viewer import create_app

    (tmp_path / "half").mkdir()
    (tmp_path / "half" / ".partial").mkdir()
    with pytest.raises(ConfigError, match="not a finished `changekit scene` output: scene.json, change.tif, "
                                          "probability.tif missing .*unfinished run"):
        create_app(tmp_path / "half")
    assert cli(["view", str(tmp_path / "nope"), "--no-browser"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_the_page_in_a_real_browser(scene, tmp_path, screenshot):
    img = screenshot(scene, tmp_path)
    if img is None:
        pytest.skip("no Chromium here (`.ci/run` installs Debian's `chromium`; `apt-get install chromium`)")
    mapped = img[:, : 1000 - 280]  # the map, left of the side panel
    red = (mapped[..., 0] > 180) & (mapped[..., 1] < 90) & (mapped[..., 2] < 90)
    assert red.sum() > 200, "no change overlay drawn"  # the change map / polygons, in red
    drawn = (np.abs(mapped - 32).sum(-1) > 30).mean()  # pixels that are not the map's #202020 background
    assert drawn > 0.2, f"the dates are not drawn ({drawn:.0%} of the map)"

@pytest.fixture(scope="module")
def seg_scene(tmp_path_factory):
    """A segmentation run: the class is the brightest band (test_scene_segmentation's toy), three classes."""
    from helpers.toys import BrightestBand
    from helpers.toys import write_class_image as _write_image

    d = tmp_path_factory.mktemp("view_seg")
    _write_image(d / "image.tif")
    model = BrightestBand()
    model.changekit_info = {"class_names": ["roof", "grass", "water"], "palette": [[200, 30, 30], [30, 200, 30],
                                                                                   [30, 30, 200]]}
    run_scene(d / "image.tif", None, d / "out", model=model, window=128, overlap=32, progress=False,
              mean=[0.0] * 3, std=[255.0] * 3, scale="none")
    return d / "out"


def test_a_segmentation_run_is_served_with_its_classes(seg_scene):
    import io

    from PIL import Image
    from starlette.testclient import TestClient

    from changekit.viewer import create_app

    client = TestClient(create_app(seg_scene))
    rec = client.get("/scene.json").json()
    assert rec["task"] == "segmentation" and rec["layers"] == ["image", "classes", "confidence"]
    assert rec["class_names"] == ["roof", "grass", "water"]
    w, s, e, n = rec["bounds"]
    x, y = _tile_of((w + e) / 2, (s + n) / 2, 14)
    for layer in ("image", "classes", "confidence"):
        r = client.get(f"/tiles/{layer}/14/{x}/{y}.png")
        assert r.status_code == 200 and r.content[:4] == b"\x89PNG", layer
    assert client.get(f"/tiles/change/14/{x}/{y}.png").status_code == 404  # not a layer of this run
    classes = np.array(Image.open(io.BytesIO(client.get(f"/tiles/classes/14/{x}/{y}.png").content)).convert("RGBA"))
    drawn = {tuple(p) for p in classes[classes[..., 3] > 0][:, :3].tolist()}
    assert drawn <= {(200, 30, 30), (30, 200, 30), (30, 30, 200)} and (30, 200, 30) in drawn  # the palette
    feats = client.get("/polygons.geojson").json()["features"]
    assert client.get("/classes.geojson").json()["features"] == feats
    assert client.get("/changes.geojson").status_code == 404  # not a change run
    assert {f["properties"]["class_name"] for f in feats} == {"roof", "grass", "water"}
    assert feats[0]["properties"]["class_name"] == "grass"  # the background is the largest region


def test_the_segmentation_page_in_a_real_browser(seg_scene, tmp_path, screenshot):
    img = screenshot(seg_scene, tmp_path)
    if img is None:
        pytest.skip("no Chromium here (`.ci/run` installs Debian's `chromium`; `apt-get install chromium`)")
    mapped = img[:, : 1000 - 280]
    green = (mapped[..., 1] > 120) & (mapped[..., 0] < 110) & (mapped[..., 2] < 110)
    assert green.mean() > 0.1, "the class map is not drawn in its palette"
