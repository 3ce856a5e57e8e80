"""Rasters through ``changekit scene``: random dtypes, band counts, sizes down to 1x1, NaN/inf, no-data values,
CRS and transforms, grids that differ, truncated and bit-flipped files, and the options that read them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from fuzzing import (
    DTYPES,
    assert_clean_exit,
    cli,
    corpus,
    damage,
    examples,
    no_partial_files,
    random_array,
    run_case,
)
from hypothesis import given
from hypothesis import strategies as st

TRANSFORMS = {
    "north-up": Affine(10.0, 0.0, 440000.0, 0.0, -10.0, 5400000.0),
    "rotated": Affine(8.0, 6.0, 440000.0, 6.0, -8.0, 5400000.0),
    "tiny": Affine(1e-9, 0.0, 0.0, 0.0, -1e-9, 0.0),
    "south-up": Affine(10.0, 0.0, 440000.0, 0.0, 10.0, 5400000.0),
}
CRSES = {"utm": "EPSG:32631", "wgs84": "EPSG:4326", "none": None}

# weighted towards inputs the model takes (uint8 RGB), so that most cases also reach the outputs' invariants
date = st.fixed_dictionaries({
    "dtype": st.sampled_from(("uint8",) * 6 + DTYPES),
    "bands": st.sampled_from([3, 3, 3, 1, 2, 4]),
    "nodata": st.sampled_from([None, 0, "max", "nan"]),
    "special": st.sampled_from([0.0, 0.05, 1.0]),
    "blank": st.sampled_from([0.0, 0.3, 1.0]),  # fraction of pixels set to the no-data value
    "damage": st.one_of(st.none(), st.none(), st.none(), st.fixed_dictionaries({"truncate": st.one_of(st.none(), st.floats(0, 1)),
                                                          "flips": st.integers(0, 40)})),
})
case_strategy = st.fixed_dictionaries({
    "seed": st.integers(0, 2**16),
    "height": st.integers(1, 48),
    "width": st.integers(1, 48),
    "crs": st.sampled_from(["utm", "utm", "utm", *sorted(CRSES)]),
    "transform": st.sampled_from(["north-up"] * 3 + sorted(TRANSFORMS)),
    "t1": date,
    "t2": st.one_of(st.none(), date),  # None: like date 1 (other values)
    "t2_grid": st.sampled_from(["same"] * 5 + ["shifted", "smaller"]),
    "window": st.sampled_from([16, 32]),
    "overlap": st.sampled_from([0, 4, 8]),
    "options": st.lists(st.sampled_from([
        "--align", "--scale=none", "--scale=dtype", "--scale=percentile", "--scale=linear:0,255", "--bands=3,2,1",
        "--bands=1", "--bands=4,4,4", "--pixel-coords", "--no-vectors", "--cog", "--threshold=0",
        "--threshold=1", "--min-area=50", "--simplify=5"]), max_size=3, unique=True),
})


def _write_date(path: Path, case: dict, spec: dict, rng: np.random.Generator, shift: tuple[int, int] = (0, 0),
                shape: tuple[int, int] | None = None) -> None:
    h, w = shape or (case["height"], case["width"])
    dtype = spec["dtype"]
    nodata = spec["nodata"]
    if nodata == "nan":
        nodata = float("nan") if np.dtype(dtype).kind == "f" else None
    elif nodata == "max":
        nodata = float(np.finfo(dtype).max if np.dtype(dtype).kind == "f" else np.iinfo(dtype).max)
    data = random_array(rng, dtype, (spec["bands"], h, w), spec["special"])
    if nodata is not None and spec["blank"]:
        data[:, rng.random((h, w)) < spec["blank"]] = nodata
    t = TRANSFORMS[case["transform"]] @ Affine.translation(*shift)
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=spec["bands"], dtype=dtype,
                       crs=CRSES[case["crs"]], transform=t, nodata=nodata) as dst:
        dst.write(data)
    if spec["damage"]:
        path.write_bytes(damage(path.read_bytes(), rng, spec["damage"]["truncate"], spec["damage"]["flips"]))


def _invalid(path: Path, bands: list[int]) -> np.ndarray:
    with rasterio.open(path) as ds:
        data = ds.read(bands, out_dtype="float64")
        return (ds.read_masks(bands).min(axis=0) == 0) | ~np.isfinite(data).all(axis=0)


def _bands_read(options: list[str], count: int) -> list[int]:
    for o in options:
        if o.startswith("--bands="):
            return [int(b) for b in o.split("=")[1].split(",")]
    return list(range(1, min(count, 3) + 1))


def check_scene_on_rasters(case: dict, work: Path, ckpt: Path) -> None:
    rng = np.random.default_rng(case["seed"])
    t1, t2, out = work / "t1.tif", work / "t2.tif", work / "out"
    _write_date(t1, case, case["t1"], rng)
    spec2 = case["t2"] or {**case["t1"], "damage": None}
    shift, shape = {"same": ((0, 0), None), "shifted": ((3, -2), None),
                    "smaller": ((0, 0), (max(1, case["height"] // 2), max(1, case["width"] // 2)))}[case["t2_grid"]]
    _write_date(t2, case, spec2, rng, shift, shape)
    overlap = min(case["overlap"], case["window"] // 2)
    argv = ["scene", "--t1", str(t1), "--t2", str(t2), "--ckpt", str(ckpt), "--out", str(out), "--window",
            str(case["window"]), "--overlap", str(overlap), "--batch-size", "2", "--quiet", *case["options"]]
    rc, stdout, err = cli(argv)
    assert_clean_exit(rc, err, argv)
    if out.exists():
        no_partial_files(out)
        assert not (out / ".changekit.lock").exists()
    if rc != 0:
        assert not (out / "change.tif").exists() and not (out / "scene.json").exists(), err
        return
    _check_outputs(out, t1, t2, case, stdout)


def _check_outputs(out: Path, t1: Path, t2: Path, case: dict, stdout: str) -> None:
    """A successful run's outputs keep their invariants: on date 1's grid, values in range, no data respected."""
    record = json.loads((out / "scene.json").read_text())
    with rasterio.open(t1) as a, rasterio.open(out / "change.tif") as c, rasterio.open(out / "probability.tif") as p:
        assert (c.height, c.width) == (a.height, a.width) == (p.height, p.width)
        if "--pixel-coords" not in case["options"] or a.crs is not None:
            assert c.transform.almost_equals(a.transform) and c.crs == a.crs
        change = c.read(1)
        prob = p.read(1)
        pmask = p.read_masks(1)
        count = a.count
    assert set(np.unique(change)) <= {0, 1, 255}
    assert ((change == 255) == (pmask == 0)).all()  # one no-data map for both rasters
    assert np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 255
    if case["t2_grid"] == "same" and "--align" not in case["options"]:
        bands = _bands_read(case["options"], count)
        invalid = _invalid(t1, bands) | _invalid(t2, bands)
        assert ((change == 255) == invalid).all(), "no-data of the outputs differs from the inputs'"
    assert f"changed pixels: {int((change == 1).sum())} of {int((change != 255).sum())} valid" in stdout
    assert record["task"] == "change" and set(record["outputs"]) >= {"change", "probability"}
    geojson = out / "changes.geojson"
    if geojson.exists():
        from shapely.geometry import shape

        for f in json.loads(geojson.read_text())["features"]:
            assert shape(f["geometry"]).is_valid and f["properties"]["pixels"] > 0


@given(case=case_strategy)
@examples(80)
def test_scene_on_random_rasters(case, fuzz_ckpt):
    run_case("rasters", lambda c, w: check_scene_on_rasters(c, w, fuzz_ckpt), case)


@pytest.mark.parametrize("case", corpus("rasters"))
def test_scene_on_rasters_corpus(case, fuzz_ckpt):
    run_case("rasters", lambda c, w: check_scene_on_rasters(c, w, fuzz_ckpt), case)
