"""STAC Items through ``changekit scene``: Items with assets dropped or pointing at missing or damaged files,
band metadata of the wrong types, no geometry, no datetime, damaged JSON, and random --bbox / --mask values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fuzzing import assert_clean_exit, cli, corpus, damage, examples, no_partial_files, run_case
from hypothesis import given
from hypothesis import strategies as st

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=6))
edit = st.one_of(
    st.tuples(st.just("drop-asset"), st.sampled_from(["blue", "green", "red", "nir", "SCL"])),
    st.tuples(st.just("href"), st.sampled_from(["blue", "nir", "SCL"]), st.sampled_from(["missing", "garbage", "relative",
                                                                                        "http"])),
    st.tuples(st.just("eo:bands"), st.sampled_from(["blue", "red"]), st.one_of(scalars, st.lists(scalars, max_size=2))),
    st.tuples(st.just("geometry"), st.sampled_from([None, {"type": "Point", "coordinates": [3.01, 48.745]},
                                                    {"type": "Polygon", "coordinates": []}, "x"])),
    st.tuples(st.just("property"), st.sampled_from(["datetime", "s2:product_type", "eo:cloud_cover"]),
              st.one_of(st.just("<drop>"), scalars)),
    st.tuples(st.just("top"), st.sampled_from(["type", "stac_version", "id", "assets", "links"]),
              st.one_of(st.just("<drop>"), scalars)),
)
case_strategy = st.fixed_dictionaries({
    "level": st.sampled_from(["L1C", "L2A", "L2A"]),
    "edits": st.lists(edit, max_size=3),
    "which": st.sampled_from([1, 2]),
    "damage": st.one_of(st.none(), st.none(), st.fixed_dictionaries({"truncate": st.one_of(st.none(), st.floats(0, 1)),
                                                                     "flips": st.integers(0, 20)})),
    "options": st.lists(st.sampled_from(["--bbox=3.0,48.74,3.02,48.75", "--bbox=10,10,10.1,10.1", "--bbox=1,2,3",
                                         "--bbox=3.01,48.745,3.0,48.75", "--mask=scl", "--mask=scl:9",
                                         "--mask=band:SCL:x", "--mask=band:nir:0", "--mask=clouds",
                                         "--max-masked=0", "--max-masked=2", "--force"]), max_size=3, unique=True),
})


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    from helpers.stac_toy import write_item

    d = tmp_path_factory.mktemp("fuzz-stac")
    return {(level, date): json.loads(write_item(d / f"{level}{date}", date, level=level).read_text())
            for level in ("L1C", "L2A") for date in (1, 2)}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny 4-band model recording Sentinel-2 bands, for L2A (so that both levels' Items reach the run)."""
    from changekit import build_model

    path = tmp_path_factory.mktemp("fuzz-stac-ck") / "m.ckpt"
    model = build_model("fc_siam_diff", base_channel=4, in_channels=4)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "changekit": {"arch": "fc_siam_diff", "arch_args": {"base_channel": 4, "in_channels": 4},
                              "num_classes": 2, "mean": [1000.0] * 4, "std": [500.0] * 4,
                              "units": {"dtype": "uint16", "range": [0, 10000],
                                        "band_names": ["B02", "B03", "B04", "B08"], "product": "L2A"}}}, path)
    return path


def _edit(item: dict, e: list, work: Path) -> None:
    kind = e[0]
    assets = item.setdefault("assets", {}) if isinstance(item.get("assets"), dict) else {}
    key = e[1] if kind in ("drop-asset", "href", "eo:bands") else None
    if key is not None and key not in assets:  # Planetary Computer's keys for the same bands
        key = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08"}.get(key, key)
    if kind == "drop-asset":
        assets.pop(key, None)
    elif kind == "href" and key in assets:
        target = {"missing": str(work / "missing.tif"), "relative": "B99.tif", "http": "http://127.0.0.1:9/x.tif",
                  "garbage": str(work / "garbage.tif")}[e[2]]
        (work / "garbage.tif").write_bytes(b"II*\x00garbage")
        assets[key]["href"] = target
    elif kind == "eo:bands" and key in assets:
        assets[key]["eo:bands"] = e[2]
    elif kind == "geometry":
        item["geometry"] = e[1]
    elif kind == "property":
        props = item.setdefault("properties", {}) if isinstance(item.get("properties"), dict) else {}
        if e[2] == "<drop>":
            props.pop(e[1], None)
        else:
            props[e[1]] = e[2]
    elif kind == "top":
        if e[2] == "<drop>":
            item.pop(e[1], None)
        else:
            item[e[1]] = e[2]


def check_stac(case: dict, work: Path, items: dict, ckpt: Path) -> None:
    paths = []
    for date in (1, 2):
        item = json.loads(json.dumps(items[(case["level"], date)]))
        if date == case["which"]:
            for e in case["edits"]:
                _edit(item, list(e), work)
        data = json.dumps(item).encode()
        if date == case["which"] and case["damage"]:
            data = damage(data, np.random.default_rng(4), case["damage"]["truncate"], case["damage"]["flips"])
        paths.append(work / f"item{date}.json")
        paths[-1].write_bytes(data)
    out = work / "out"
    argv = ["scene", "--t1", str(paths[0]), "--t2", str(paths[1]), "--ckpt", str(ckpt), "--out", str(out),
            "--window", "32", "--overlap", "8", "--quiet", "--scale", "none", *case["options"]]
    rc, _, err = cli(argv)
    assert_clean_exit(rc, err, argv)
    if out.exists():
        no_partial_files(out)
        assert (rc == 0) == (out / "change.tif").exists(), err


@given(case=case_strategy)
@examples(40)
def test_random_stac_items(case, items, ckpt):
    run_case("stac-items", lambda c, w: check_stac(c, w, items, ckpt), case)


@pytest.mark.parametrize("case", corpus("stac-items"))
def test_stac_items_corpus(case, items, ckpt):
    run_case("stac-items", lambda c, w: check_stac(c, w, items, ckpt), case)
