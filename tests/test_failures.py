"""Fail loudly (docs/errors.md): every way a run could end in a wrong or empty result, or in a traceback, ends
instead in one line naming the file or option and the fix, exit status 2 (130 for Ctrl-C), and nothing
half-written."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import rasterio
import torch
from helpers.engine_toy import TOY_CONFIG, write_toy_dataset
from helpers.toys import DiffModel, write_scene_pair

from changekit.cli import main as cli
from changekit.errors import ConfigError, DataError
from changekit.geo.record import OutputLock
from changekit.geo.scene import run_scene


class MessageHub:
    """Stands for mmengine's pickled bookkeeping objects (a class a reader must never import and run)."""


KW = dict(window=64, overlap=16, batch_size=2, progress=False, mean=[0.0] * 3, std=[255.0] * 3)


def _err(capsys) -> str:
    """The error output: one line (besides Lightning's INFO lines of a run that started), no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("INFO:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(autouse=True)
def _lightning_logs_to_this_test():
    """Lightning's log handler keeps the stderr of the test that imported it; point it at this test's."""
    import logging
    import sys

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        for h in logging.getLogger(name).handlers:
            if isinstance(h, logging.StreamHandler):
                h.stream = sys.stderr  # (setStream would flush the closed one)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair")
    write_scene_pair(d / "t1.tif", d / "t2.tif", size=(128, 160), seed=2, changes_per_mpx=200)
    return d


@pytest.fixture(scope="module")
def scene_ckpt(tiny_scene_ckpt):
    """A changekit checkpoint of a tiny model trained on uint8 data (units recorded)."""
    return tiny_scene_ckpt


# ------------------------------------------------------------------------------ silent wrong results
@pytest.mark.parametrize("option,value", [("--batch-size", "0"), ("--threshold", "1.5"), ("--min-area", "-1"),
                                          ("--overlap", "64"), ("--window", "0"), ("--simplify", "-2")])
def test_scene_numeric_options_are_checked(pair, tmp_path, capsys, option, value):
    args = ["scene", "--t1", str(pair / "t1.tif"), "--t2", str(pair / "t2.tif"), "--ckpt", "x.ckpt",
            "--out", str(tmp_path / "o"), "--window", "64", "--overlap", "16", option, value]
    assert cli(args) == 2
    assert option in _err(capsys)
    assert not (tmp_path / "o").exists()  # refused before anything was written
    with pytest.raises(ConfigError, match=option):  # the Python API applies the same checks
        run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path / "p", model=DiffModel(),
                  **{**KW, option[2:].replace("-", "_"): float(value) if "." in value else int(value)})


def test_scene_dates_of_different_dtype_are_refused_unless_scaled(tmp_path):
    write_scene_pair(tmp_path / "a.tif", tmp_path / "x.tif", size=(96, 96), seed=1)
    write_scene_pair(tmp_path / "y.tif", tmp_path / "b.tif", size=(96, 96), seed=1, dtype="uint16")
    with pytest.raises(DataError, match="differ in data type.*uint8.*uint16.*--scale"):
        run_scene(tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "o", model=DiffModel(), scale="auto", **KW)
    s = run_scene(tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "o", model=DiffModel(), scale="percentile", **KW)
    assert s["valid_pixels"] == 96 * 96


def test_scene_units_against_the_checkpoint(tmp_path, scene_ckpt, capsys):
    with rasterio.open(tmp_path / "f1.tif", "w", driver="GTiff", width=96, height=96, count=3, dtype="float32",
                       crs="EPSG:32631", transform=rasterio.transform.from_origin(0, 96, 1, 1)) as a:
        a.write(np.random.default_rng(0).random((3, 96, 96), dtype=np.float32))  # reflectance 0..1
    import shutil

    shutil.copy(tmp_path / "f1.tif", tmp_path / "f2.tif")
    args = ["scene", "--t1", str(tmp_path / "f1.tif"), "--t2", str(tmp_path / "f2.tif"), "--ckpt", str(scene_ckpt),
            "--out", str(tmp_path / "o"), "--window", "64", "--overlap", "16", "--quiet"]
    assert cli(args) == 2
    assert "float32 but the model was trained on uint8" in _err(capsys) and not (tmp_path / "o" / "change.tif").exists()
    assert cli([*args, "--scale", "linear:0,1"]) == 0  # the flag that says how to map them


def _fit_toy(tmp_path, monkeypatch):
    """A toy dataset and config in tmp_path, trained for 2 steps into tmp_path/runs: (root, config, --output_root)."""
    root = write_toy_dataset(tmp_path / "data", n_train=4, n_val=2, n_test=2)
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(TOY_CONFIG.format(root=root))
    out = ["--output_root", str(tmp_path / "runs")]
    monkeypatch.chdir(tmp_path)
    assert cli(["fit", "-c", str(cfg), *out, "--trainer.max_steps", "2"]) == 0
    return root, cfg, out


def test_test_on_16bit_images_with_an_8bit_model_is_refused(tmp_path, capsys, monkeypatch):
    from PIL import Image

    root, cfg, out = _fit_toy(tmp_path, monkeypatch)
    ck = tmp_path / "runs" / "toy" / "checkpoints" / "last.ckpt"
    assert torch.load(ck, weights_only=True)["changekit"]["units"] == {"dtype": "uint8", "range": [0.0, 255.0]}
    t16 = tmp_path / "d16"
    for d in ("A", "B", "label"):
        (t16 / "test" / d).mkdir(parents=True)
        for p in (root / "test" / d).iterdir():
            arr = np.array(Image.open(p))
            if d == "label":
                Image.fromarray(arr).save(t16 / "test" / d / p.name)
            else:
                with rasterio.open(t16 / "test" / d / (p.stem + ".tif"), "w", driver="GTiff", width=arr.shape[1],
                                   height=arr.shape[0], count=3, dtype="uint16") as ds:
                    ds.write(np.moveaxis(arr.astype(np.uint16) * 257, -1, 0))
    capsys.readouterr()
    args = ["test", "--ckpt_path", str(ck), "--data.root", str(t16), "--data.suffixes", '[".tif", ".tif", ".png"]', *out]
    assert cli(args) == 2
    err = _err(capsys)
    assert "uint16 but the model was trained on uint8" in err and "--data.input_range" in err
    assert cli([*args, "--data.input_range", "[0, 65535]"]) == 0  # rescaled: the same metrics as on the 8-bit set
    f1_16 = json.loads((tmp_path / "runs" / "toy" / "metrics_test.json").read_text())["f1"]
    assert cli(["test", "--ckpt_path", str(ck), "--data.root", str(root), *out]) == 0
    f1_8 = json.loads((tmp_path / "runs" / "toy" / "metrics_test.json").read_text())["f1"]
    assert f1_16 == pytest.approx(f1_8, abs=1e-3)


def test_align_without_overlap_names_both_footprints(pair, tmp_path):
    with rasterio.open(pair / "t1.tif") as src:
        profile, data = src.profile, src.read()
    far = profile | {"transform": rasterio.transform.from_origin(900000.0, 1000000.0, 10.0, 10.0)}
    with rasterio.open(tmp_path / "far.tif", "w", **far) as dst:
        dst.write(data)
    with pytest.raises(DataError, match=r"do not overlap: --t1 .* covers .*EPSG:32631.*--t2 .* covers"):
        run_scene(pair / "t1.tif", tmp_path / "far.tif", tmp_path / "o", model=DiffModel(), align=True, **KW)
    assert not (tmp_path / "o" / "change.tif").exists()


def test_no_valid_pixel_is_an_error_not_an_empty_result(tmp_path):
    write_scene_pair(tmp_path / "a.tif", tmp_path / "b.tif", size=(96, 96), seed=1, nodata=0)
    with rasterio.open(tmp_path / "b.tif", "r+") as b:
        b.write(np.zeros((3, 96, 96), np.uint8))  # date 2 is all no-data
    with pytest.raises(DataError, match="no valid pixel"):
        run_scene(tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "o", model=DiffModel(), **KW)
    assert not (tmp_path / "o" / "change.tif").exists() and not (tmp_path / "o" / "changes.geojson").exists()


def test_dates_without_georeferencing_need_pixel_coords(tmp_path, capsys, scene_ckpt):
    for name in ("a.tif", "b.tif"):
        with rasterio.open(tmp_path / name, "w", driver="GTiff", width=96, height=96, count=3, dtype="uint8") as ds:
            ds.write(np.random.default_rng(len(name)).integers(0, 255, (3, 96, 96), dtype=np.uint8))
    args = ["scene", "--t1", str(tmp_path / "a.tif"), "--t2", str(tmp_path / "b.tif"), "--ckpt", str(scene_ckpt),
            "--out", str(tmp_path / "o"), "--window", "64", "--overlap", "16", "--quiet"]
    assert cli(args) == 2
    assert "no georeferencing" in _err(capsys) and "--pixel-coords" in capsys.readouterr().err + "--pixel-coords"
    assert cli([*args, "--pixel-coords"]) == 0
    assert "no CRS" in capsys.readouterr().out
    with rasterio.open(tmp_path / "o" / "change.tif") as c:
        assert c.crs is None


def test_fit_and_predict_refuse_to_mix_with_an_earlier_run(tmp_path, capsys, monkeypatch):
    root, cfg, out = _fit_toy(tmp_path, monkeypatch)
    capsys.readouterr()
    assert cli(["fit", "-c", str(cfg), *out, "--trainer.max_steps", "2"]) == 2
    assert "--ckpt_path last" in _err(capsys) and "--overwrite" in capsys.readouterr().err + "--overwrite"
    assert cli(["fit", "-c", str(cfg), *out, "--trainer.max_steps", "2", "--overwrite", "true"]) == 0
    ck = str(tmp_path / "runs" / "toy" / "checkpoints" / "last.ckpt")
    pred = ["predict", "--ckpt_path", ck, "--output_dir", str(tmp_path / "pred"), *out]
    assert cli(pred) == 0
    capsys.readouterr()
    assert cli(pred) == 2
    assert "already holds 2 maps" in _err(capsys)
    stale = tmp_path / "pred" / "maps" / "old_image.png"
    stale.write_bytes((tmp_path / "pred" / "maps" / "test_000.png").read_bytes())
    assert cli([*pred, "--overwrite", "true"]) == 0
    assert not stale.exists() and len(list((tmp_path / "pred" / "maps").glob("*.png"))) == 2


# ------------------------------------------------------------------------------ one line, not a traceback
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("trained")
    root = write_toy_dataset(d / "data", n_train=4, n_val=2, n_test=2)
    cfg = d / "toy.yaml"
    cfg.write_text(TOY_CONFIG.format(root=root))
    cwd = os.getcwd()
    os.chdir(d)
    try:
        assert cli(["fit", "-c", str(cfg), "--output_root", str(d / "runs"), "--trainer.max_steps", "2"]) == 0
    finally:
        os.chdir(cwd)
    return root, cfg, d / "runs" / "toy" / "checkpoints" / "last.ckpt"


def test_checkpoint_errors_are_one_line(trained, tmp_path, capsys):
    root, cfg, ck = trained
    out = ["--output_root", str(tmp_path / "runs"), "--data.root", str(root)]
    # a checkpoint of another model than the config builds
    assert cli(["test", "-c", str(cfg), "--model.arch", "bit_r18", "--model.arch_args", "{}", "--ckpt_path", str(ck), *out]) == 2
    assert "holds model 'fc_siam_diff' but this run builds 'bit_r18'" in _err(capsys)
    # a plain weights file
    sd = torch.load(ck, weights_only=True)["state_dict"]
    torch.save({k[6:]: v for k, v in sd.items()}, tmp_path / "plain.pth")
    assert cli(["test", "-c", str(cfg), "--ckpt_path", str(tmp_path / "plain.pth"), *out]) == 2
    assert "--model.weights" in _err(capsys)
    # an mmengine checkpoint (pickled objects): read inertly, never torch's weights_only advice
    torch.save({"meta": {"hub": MessageHub()}, "state_dict": {k[6:]: v for k, v in sd.items()}}, tmp_path / "mm.pth")
    assert cli(["test", "-c", str(cfg), "--ckpt_path", str(tmp_path / "mm.pth"), *out]) == 2
    err = _err(capsys)
    assert "--model.weights" in err and "weights_only" not in err
    # ... which loads strictly through --model.weights
    assert cli(["test", "-c", str(cfg), "--model.weights", str(tmp_path / "plain.pth"), *out]) == 0
    capsys.readouterr()
    # missing checkpoint file
    assert cli(["test", "-c", str(cfg), "--ckpt_path", str(tmp_path / "nope.ckpt"), *out]) == 2
    assert "no such file" in _err(capsys)


def test_config_typos_and_types_are_one_line(trained, tmp_path, capsys):
    root, cfg, ck = trained
    out = ["--output_root", str(tmp_path / "runs")]
    for extra, expect in ((["--model.arch_args", '{"base_chanel": 4}'], "'base_chanel' is not an argument"),
                          (["--model.optimizer", '{"lr": "fast"}'], "model.optimizer.lr: 'fast' is not a number"),
                          (["--trainer.max_steps", "many"], "trainer.max_steps"),
                          (["--trainer.accelerator", "gpu"], "gpu")):
        assert cli(["fit", "-c", str(cfg), *out, *extra]) == 2, extra
        assert expect in _err(capsys), extra


def test_scene_output_folder_and_device_errors(pair, tmp_path, capsys, scene_ckpt):
    base = ["scene", "--t1", str(pair / "t1.tif"), "--t2", str(pair / "t2.tif"), "--ckpt", str(scene_ckpt),
            "--window", "64", "--overlap", "16", "--quiet"]
    (tmp_path / "file").write_text("x")
    assert cli([*base, "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in _err(capsys)
    assert cli([*base, "--out", str(tmp_path / "file" / "sub")]) == 2
    assert "cannot create the folder" in _err(capsys)
    if not torch.cuda.is_available():
        assert cli([*base, "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
        assert "no CUDA GPU" in _err(capsys)


def test_a_full_disk_is_one_line(pair, tmp_path, capsys, scene_ckpt, monkeypatch):
    import errno

    import changekit.geo.outputs as outputs

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o" / ".partial" / "change.tif"))

    monkeypatch.setattr(outputs, "assemble_rasters", full)
    args = ["scene", "--t1", str(pair / "t1.tif"), "--t2", str(pair / "t2.tif"), "--ckpt", str(scene_ckpt),
            "--out", str(tmp_path / "o"), "--window", "64", "--overlap", "16", "--quiet"]
    assert cli(args) == 2
    err = _err(capsys)
    assert "No space left on device" in err and "change.tif" in err and "rerun the same command" in err
    assert not (tmp_path / "o" / OutputLock.NAME).exists()  # the lock goes with the run


def test_a_corrupt_raster_mid_scene_is_one_line_and_leaves_no_temporary_strip(pair, tmp_path, capsys, scene_ckpt):
    import shutil

    shutil.copy(pair / "t1.tif", tmp_path / "t1.tif")
    with rasterio.open(tmp_path / "t1.tif") as src:  # damage the compressed tile that holds the scene's last rows
        offset = int(src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
    data = bytearray((tmp_path / "t1.tif").read_bytes())
    data[offset:offset + 64] = b"\xff" * 64
    (tmp_path / "t1.tif").write_bytes(bytes(data))
    args = ["scene", "--t1", str(tmp_path / "t1.tif"), "--t2", str(pair / "t2.tif"), "--ckpt", str(scene_ckpt),
            "--out", str(tmp_path / "o"), "--window", "64", "--overlap", "16", "--quiet"]
    assert cli(args) == 2  # found while sampling the values for the units check
    err = _err(capsys)
    assert "t1.tif: cannot read" in err and "damaged" in err and "resume" in err
    assert cli([*args, "--scale", "none"]) == 2  # no sampling: found mid-scene, by the window that reads it
    assert "t1.tif: cannot read the window at x=" in _err(capsys)
    assert not [p for p in (tmp_path / "o").rglob("*") if ".tmp" in p.name]


def test_ctrl_c_in_a_scene_resumes(pair, tmp_path, capsys, scene_ckpt, monkeypatch):
    import changekit.geo.scene as scene

    real, calls = scene.predict_strip, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(scene, "predict_strip", interrupted)
    args = ["scene", "--t1", str(pair / "t1.tif"), "--t2", str(pair / "t2.tif"), "--ckpt", str(scene_ckpt),
            "--out", str(tmp_path / "o"), "--window", "64", "--overlap", "16", "--quiet"]
    assert cli(args) == 130
    assert "interrupted; rerun the same command to resume" in _err(capsys)
    monkeypatch.setattr(scene, "predict_strip", real)
    assert cli(args) == 0
    assert "(1 strips resumed)" in capsys.readouterr().out


def test_ctrl_c_in_fit_saves_last_and_says_how_to_resume(trained, tmp_path, capsys, monkeypatch):
    _, cfg, _ = trained
    out = ["--output_root", str(tmp_path / "runs")]
    monkeypatch.chdir(tmp_path)
    cb = '{"class_path": "helpers.engine_toy.InterruptAt", "init_args": {"step": 2}}'
    assert cli(["fit", "-c", str(cfg), *out, "--trainer.max_steps", "4", "--trainer.callbacks+", cb]) == 130
    err = capsys.readouterr().err
    assert "interrupted; resume with the same command plus --ckpt_path last" in err and "Traceback" not in err
    last = tmp_path / "runs" / "toy" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert cli(["fit", "-c", str(cfg), *out, "--trainer.max_steps", "4", "--ckpt_path", "last"]) == 0
    assert torch.load(last, weights_only=True)["global_step"] == 4


# ------------------------------------------------------------------------------ safety
def test_evaluation_checks_every_file_before_the_loop(trained, tmp_path, capsys):
    import shutil

    from PIL import Image

    root, cfg, ck = trained
    bad = tmp_path / "data"
    shutil.copytree(root, bad)
    last = sorted((bad / "test" / "label").iterdir())[-1]
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(last)  # the last label has the wrong size
    for cmd in ("test", "validate", "predict"):
        split = ["--data.val_split", "test"] if cmd == "validate" else []
        assert cli([cmd, "--ckpt_path", str(ck), "--data.root", str(bad), "--output_root", str(tmp_path / "r"),
                    *split]) == 2, cmd
        assert last.name in capsys.readouterr().err
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").rglob("metrics_*.json"))


def test_a_second_scene_on_the_same_out_is_refused(pair, tmp_path, capsys, scene_ckpt):
    out = tmp_path / "o"
    out.mkdir()
    (out / OutputLock.NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                   "started": "2026-12-03 08:00:00"}))
    args = ["scene", "--t1", str(pair / "t1.tif"), "--t2", str(pair / "t2.tif"), "--ckpt", str(scene_ckpt),
            "--out", str(out), "--window", "64", "--overlap", "16", "--quiet"]
    assert cli(args) == 2
    assert f"in use by another changekit run (pid {os.getpid()} on {socket.gethostname()}" in _err(capsys)
    # a lock whose process is gone is taken over
    (out / OutputLock.NAME).write_text(json.dumps({"pid": 2**22 + 7, "host": socket.gethostname()}))
    assert cli(args) == 0
    assert not (out / OutputLock.NAME).exists()


def test_atomic_writes_get_normal_permissions(tmp_path):
    from changekit.atomic import write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


def test_resumed_geopackage_has_the_same_features(pair, tmp_path):
    import fiona

    full = run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path / "full", model=DiffModel(), **KW)
    seen = []

    def stop(n):
        seen.append(n)
        if n == 4:  # the first window of the second strip: the first strip is finished
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path / "res", model=DiffModel(), on_window=stop, **KW)
    res = run_scene(pair / "t1.tif", pair / "t2.tif", tmp_path / "res", model=DiffModel(), **KW)
    assert res["strips_resumed"] >= 1 and res["polygons"] == full["polygons"] > 0

    def features(path):
        with fiona.open(path) as src:
            return sorted((json.dumps(dict(f.properties), sort_keys=True), f.geometry["coordinates"].__repr__())
                          for f in src)

    assert features(tmp_path / "res" / "changes.gpkg") == features(tmp_path / "full" / "changes.gpkg")
    for name in ("change.tif", "probability.tif", "changes.geojson"):
        assert (tmp_path / "res" / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name
