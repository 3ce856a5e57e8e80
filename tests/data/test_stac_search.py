"""``changekit search`` against a small STAC API served on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from helpers.stac_toy import CLOUD, write_item

from changekit.cli import main as cli

ROOT = "http://127.0.0.1:{port}/"


def _api(items: list[dict], port: int):
    """A STAC API with item search (GET and POST): collections, bbox and datetime filters, as servers apply them."""
    from shapely.geometry import box, shape
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    root = ROOT.format(port=port)

    def landing(request):
        return JSONResponse({
            "type": "Catalog", "stac_version": "1.0.0", "id": "test", "description": "changekit's test API",
            "conformsTo": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search"],
            "links": [{"rel": "self", "href": root}, {"rel": "root", "href": root},
                      {"rel": "search", "href": root + "search", "type": "application/geo+json", "method": "GET"},
                      {"rel": "search", "href": root + "search", "type": "application/geo+json", "method": "POST"}]})

    def _in_period(item: dict, period: str) -> bool:
        start, end = period.split("/")
        t = item["properties"]["datetime"][:19]
        return (start in ("..", "") or t >= start[:19]) and (end in ("..", "") or t <= end[:19])

    async def search(request):
        q = await request.json() if request.method == "POST" else dict(request.query_params)
        colls = q.get("collections") or []
        colls = colls.split(",") if isinstance(colls, str) else colls
        bbox = q.get("bbox")
        bbox = [float(v) for v in bbox.split(",")] if isinstance(bbox, str) else bbox
        feats = [i for i in items if (not colls or i["collection"] in colls)
                 and (not bbox or shape(i["geometry"]).intersects(box(*bbox)))
                 and (not q.get("datetime") or _in_period(i, q["datetime"]))]
        return JSONResponse({"type": "FeatureCollection", "features": feats, "links": []})

    return Starlette(routes=[Route("/", landing), Route("/search", search, methods=["GET", "POST"])])


@pytest.fixture
def served(tmp_path):
    """Four L2A Items: in 2019 a clear one and one cloudy over the AOI (less cloudy over its whole product); in
    2023 a clear one and one above --max-cloud."""
    import uvicorn

    def item(name, date, when, cloud):
        d = json.loads(write_item(tmp_path / name, date, level="L2A").read_text())
        d.update(id=name, collection="sentinel-2-l2a")
        d["properties"].update(datetime=when, **{"eo:cloud_cover": cloud})
        return d

    items = [item("a_clear", 1, "2019-07-01T10:00:00Z", 8.0), item("a_cloudy", 2, "2019-08-01T10:00:00Z", 2.0),
             item("b_clear", 1, "2023-07-01T10:00:00Z", 1.0), item("b_overcast", 1, "2023-08-01T10:00:00Z", 80.0)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_api(items, port), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield ROOT.format(port=port)
    server.should_exit = True
    thread.join(timeout=10)


def _cloud_bbox() -> str:
    from rasterio.warp import transform_bounds

    x, y, w, h = CLOUD  # the AOI: the area the cloud of "a_cloudy" covers
    utm = (500000 + 10 * x + 20, 5400000 - 10 * (y + h) + 20, 500000 + 10 * (x + w) - 20, 5400000 - 10 * y - 20)
    return ",".join(f"{v:.8f}" for v in transform_bounds("EPSG:32631", "EPSG:4326", *utm))


def test_search_ranks_by_cloud_over_the_area_and_writes_items_scene_reads(served, tmp_path, capsys):
    bbox = _cloud_bbox()
    out = tmp_path / "chosen"
    assert cli(["search", "--url", served, "--collection", "sentinel-2-l2a", "--bbox", bbox, "--dates",
                "2019-06/2019-09", "2023-06-01/2023-09-30", "--max-cloud", "20", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "date 1 (2019-06/2019-09): 2 candidate(s)" in text and "date 2 (2023-06-01/2023-09-30): 1 candidate(s)" in text
    lines = text.splitlines()
    first = lines.index("date 1 (2019-06/2019-09): 2 candidate(s)")
    assert lines[first + 1].split()[0] == "a_clear" and "over the area   0.0 %" in lines[first + 1]
    assert lines[first + 2].split()[0] == "a_cloudy" and "over the area 100.0 %" in lines[first + 2]
    assert "b_overcast" not in text
    chosen = sorted(out.glob("*.json"))
    assert [p.name for p in chosen] == ["date1_a_clear.json", "date2_b_clear.json"]
    assert "next: changekit scene --t1" in text
    # the written Items are what scene reads (offline: the assets are local files)
    from changekit.data.stac import read_item

    assert read_item(chosen[0]).assets["B04"].href.startswith("/")


def test_search_offline_and_with_nothing_found_is_one_line(served, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    args = ["--collection", "sentinel-2-l2a", "--bbox", _cloud_bbox(), "--out", str(tmp_path / "o")]
    assert cli(["search", "--url", f"http://127.0.0.1:{closed}/", *args, "--dates", "2019-06/2019-09"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach the STAC API" in err and "needs the network" in err
    assert cli(["search", "--url", served, *args, "--dates", "2021-01/2021-02"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no sentinel-2-l2a Item over the area" in err and "2021-01/2021-02" in err
    assert cli(["search", "--url", served, *args, "--dates", "2019"]) == 2
    assert "give each period as START/END" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
