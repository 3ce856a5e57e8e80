"""The records a run leaves and reads back: ``scene.json`` (read by the viewer), the resume record under
``--out/.partial`` (plan, strips, lock), and label maps read by ``changekit score``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fuzzing import assert_clean_exit, cli, corpus, damage, examples, no_partial_files, run_case
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from changekit.errors import ChangekitError

scalars = st.one_of(st.none(), st.booleans(), st.integers(-300, 300), st.floats(allow_nan=True), st.text(max_size=8))
values = st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(st.text(max_size=5), scalars, max_size=2))


# ------------------------------------------------------------------------------------- scene.json -> viewer
record_case = st.fixed_dictionaries({
    "edits": st.dictionaries(st.sampled_from(["format", "task", "t1", "t2", "image", "bands", "display", "outputs",
                                              "crs", "mean", "std", "scaling", "train_range", "palette",
                                              "class_names", "threshold"]),
                             st.one_of(st.just("<drop>"), values), max_size=3),
    "damage": st.one_of(st.none(), st.fixed_dictionaries({"truncate": st.one_of(st.none(), st.floats(0, 1)),
                                                          "flips": st.integers(0, 10)})),
    "top": st.sampled_from(["object", "object", "object", "list", "null"]),
})


def check_record(case: dict, work: Path, scene: Path) -> None:
    from starlette.testclient import TestClient

    from changekit.viewer import create_app

    out = work / "o"
    shutil.copytree(scene, out)
    record = json.loads((out / "scene.json").read_text())
    for k, v in case["edits"].items():
        if v == "<drop>":
            record.pop(k, None)
        else:
            record[k] = v
    obj = record if case["top"] == "object" else [record] if case["top"] == "list" else None
    data = json.dumps(obj).encode()
    if case["damage"]:
        data = damage(data, np.random.default_rng(3), case["damage"]["truncate"], case["damage"]["flips"])
    (out / "scene.json").write_bytes(data)
    try:
        app = create_app(out)
    except ChangekitError as e:
        assert "\n" not in str(e) and "scene.json" in str(e), str(e)
        return
    client = TestClient(app)  # server errors are raised here, failing the case
    assert client.get("/scene.json").status_code == 200
    for url in ("/", "/changes.geojson", "/polygons.geojson", "/tiles/t1/14/8413/5680.png",
                "/tiles/change/3/1/1.png", "/tiles/probability/20/0/0.png"):
        assert client.get(url).status_code in (200, 204, 404), url


@given(case=record_case)
@examples(40)
def test_random_scene_records(case, fuzz_scene):
    run_case("scene-records", lambda c, w: check_record(c, w, fuzz_scene), case)


@pytest.mark.parametrize("case", corpus("scene-records"))
def test_scene_records_corpus(case, fuzz_scene):
    run_case("scene-records", lambda c, w: check_record(c, w, fuzz_scene), case)


# --------------------------------------------------------------------------------- the resume record (.partial)
resume_case = st.fixed_dictionaries({
    "plan": st.one_of(st.none(), st.sampled_from(["<drop>", "<truncate>", "<garbage>"]),
                      st.dictionaries(st.sampled_from(["window", "overlap", "scaling", "mean", "model", "grid"]),
                                      values, min_size=1, max_size=2)),
    "strips": st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["drop", "truncate", "empty"])), max_size=2),
    "lock": st.one_of(st.none(), st.sampled_from(["", "garbage", '{"pid": 1, "host": "elsewhere"}',
                                                  '{"pid": 999999999}'])),
})


@pytest.fixture(scope="module")
def resumable(fuzz_pair, fuzz_ckpt, tmp_path_factory):
    """A finished run's outputs (the reference) and its kept .partial folder (what an interrupted run leaves)."""
    ref = tmp_path_factory.mktemp("fuzz-resume") / "ref"
    argv = ["scene", "--t1", str(fuzz_pair / "t1.tif"), "--t2", str(fuzz_pair / "t2.tif"), "--ckpt", str(fuzz_ckpt),
            "--window", "32", "--overlap", "8", "--quiet"]
    assert cli([*argv, "--out", str(ref), "--keep-partial"])[0] == 0
    return ref, argv


def check_resume(case: dict, work: Path, ref: Path, argv: list[str]) -> None:
    out = work / "o"
    shutil.copytree(ref / ".partial", out / ".partial")
    plan = out / ".partial" / "plan.json"
    if case["plan"] == "<drop>":
        plan.unlink()
    elif case["plan"] == "<truncate>":
        plan.write_bytes(plan.read_bytes()[:17])
    elif case["plan"] == "<garbage>":
        plan.write_bytes(b"\xff\xfe\x00garbage")
    elif case["plan"]:
        plan.write_text(json.dumps({**json.loads(plan.read_text()), **case["plan"]}))
    strips = sorted(p for p in (out / ".partial").iterdir() if p.name.startswith("strip"))
    for i, how in case["strips"]:
        p = strips[i % len(strips)]
        if how == "drop":
            p.unlink(missing_ok=True)
        elif p.exists():
            p.write_bytes(b"" if how == "empty" else p.read_bytes()[: p.stat().st_size // 2])
    if case["lock"] is not None:
        (out / ".changekit.lock").write_text(case["lock"])
    rc, _, err = cli([*argv, "--out", str(out)])
    assert_clean_exit(rc, err, argv)
    no_partial_files(out)
    if rc == 0:  # resumed: the same bytes as the uninterrupted run
        for name in ("change.tif", "probability.tif"):
            assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    else:
        assert not (out / "change.tif").exists()


@given(case=resume_case)
@examples(30)
def test_random_resume_records(case, resumable):
    run_case("resume", lambda c, w: check_resume(c, w, *resumable), case)


@pytest.mark.parametrize("case", corpus("resume"))
def test_resume_records_corpus(case, resumable):
    run_case("resume", lambda c, w: check_resume(c, w, *resumable), case)


# ------------------------------------------------------------------------------------- label maps -> score
label_case = st.fixed_dictionaries({
    "seed": st.integers(0, 999),
    "n": st.integers(1, 3),
    "pred": st.fixed_dictionaries({"mode": st.sampled_from(["L", "L", "1", "RGB", "P", "I;16"]),
                                   "values": st.sampled_from(["0/255", "0/1", "random"])}),
    "label": st.fixed_dictionaries({"mode": st.sampled_from(["L", "L", "1", "RGB", "P", "I;16"]),
                                    "values": st.sampled_from(["0/255", "0/1", "0/1/255", "random"])}),
    "size": st.sampled_from(["same", "same", "other"]),
    "missing": st.booleans(),
    "damage": st.one_of(st.none(), st.fixed_dictionaries({"truncate": st.one_of(st.none(), st.floats(0, 1)),
                                                          "flips": st.integers(0, 10)})),
    "options": st.lists(st.sampled_from(["--ignore=255", "--ignore=0", "--ignore=-1", "--label-encoding=0-255",
                                         "--label-encoding=0-1", "--label-encoding=index", "--json"]),
                        max_size=2, unique=True),
})


def _label_image(rng: np.random.Generator, spec: dict, shape: tuple[int, int]) -> Image.Image:
    pick = {"0/255": [0, 255], "0/1": [0, 1], "0/1/255": [0, 1, 255], "random": list(range(256))}[spec["values"]]
    a = rng.choice(pick, shape).astype(np.uint8)
    img = Image.fromarray(a)
    return img.convert(spec["mode"]) if spec["mode"] != "I;16" else Image.fromarray(a.astype(np.uint16))


def check_labels(case: dict, work: Path) -> None:
    rng = np.random.default_rng(case["seed"])
    (work / "pred").mkdir()
    (work / "label").mkdir()
    for i in range(case["n"]):
        _label_image(rng, case["pred"], (12, 16)).save(work / "pred" / f"{i}.png")
        if not (case["missing"] and i == 0):
            shape = (12, 16) if case["size"] == "same" else (16, 12)
            _label_image(rng, case["label"], shape).save(work / "label" / f"{i}.png")
    p = work / "label" / f"{case['n'] - 1}.png"
    if case["damage"] and p.exists():
        p.write_bytes(damage(p.read_bytes(), rng, case["damage"]["truncate"], case["damage"]["flips"]))
    argv = ["score", str(work / "pred"), str(work / "label"), *case["options"]]
    rc, out, err = cli(argv)
    assert_clean_exit(rc, err, argv)
    if rc == 0 and "--json" in case["options"]:
        m = json.loads(out)
        assert all(m[k] is None or m[k] != m[k] or 0 <= m[k] <= 1 for k in ("precision", "recall", "f1", "iou"))


@given(case=label_case)
@examples(40)
def test_random_label_maps(case):
    run_case("labels", check_labels, case)


@pytest.mark.parametrize("case", corpus("labels"))
def test_label_maps_corpus(case):
    run_case("labels", check_labels, case)
