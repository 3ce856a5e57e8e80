"""Viewer URLs: tile coordinates out of range, unknown layers, path traversal (plain and encoded), odd methods and
query strings. Every answer is 200, 204, 400, 404 or 405; nothing outside the static folder and the run is served."""

from __future__ import annotations

import pytest
from fuzzing import corpus, examples, run_case
from hypothesis import given
from hypothesis import strategies as st

LAYERS = ["t1", "t2", "change", "probability", "classes", "confidence", "image", "x", "..", "%2e%2e", ""]
coord = st.one_of(st.integers(-3, 30), st.sampled_from(["-1", "1e3", "99999999999999999999", "abc", "", "0x1", "%00"]))
url_case = st.one_of(
    st.fixed_dictionaries({"kind": st.just("tile"), "layer": st.sampled_from(LAYERS), "z": coord, "x": coord,
                           "y": coord, "ext": st.sampled_from([".png", ".png", ".jpg", ""])}),
    st.fixed_dictionaries({"kind": st.just("path"),
                           "parts": st.lists(st.sampled_from(["static", "..", "%2e%2e", "%2F", "scene.json", "tiles",
                                                              "polygons.geojson", "changes.geojson", "etc", "passwd",
                                                              "index.html", "app.js", "~", "", "%00", "é"]),
                                             max_size=5)}),
    st.fixed_dictionaries({"kind": st.just("text"), "path": st.text(max_size=30)}),
)
methods = st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "DELETE"])


def _url(case: dict) -> str:
    if case["kind"] == "tile":
        return f"/tiles/{case['layer']}/{case['z']}/{case['x']}/{case['y']}{case['ext']}"
    path = "/".join(case["parts"]) if case["kind"] == "path" else case["path"]
    return "/" + path.lstrip("/")  # (a URL starting with // names a host, not a path)


def check_url(case: dict, client, method: str = "GET") -> None:
    from urllib.parse import quote

    url = quote(_url(case), safe="/%~")
    r = client.request(method, url)
    assert r.status_code in (200, 204, 400, 404, 405), (url, r.status_code)
    if r.status_code == 200 and method == "GET":
        assert b"root:" not in r.content  # no file outside the viewer's own
        if r.request.url.path.startswith("/tiles/"):  # (the client resolves /tiles/.. to /)
            assert r.headers["content-type"] == "image/png"


@pytest.fixture(scope="module")
def client(fuzz_scene):
    from starlette.testclient import TestClient

    from changekit.viewer import create_app

    return TestClient(create_app(fuzz_scene))  # raises the server's own exceptions: a 500 fails the case


@given(case=url_case, method=methods)
@examples(200)
def test_random_viewer_urls(case, method, client):
    run_case("viewer-urls", lambda c, w: check_url(c, client, method), case)


@pytest.mark.parametrize("case", corpus("viewer-urls"))
def test_viewer_urls_corpus(case, client):
    run_case("viewer-urls", lambda c, w: check_url(c, client), case)
