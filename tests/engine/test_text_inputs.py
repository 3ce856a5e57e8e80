"""Per-image class names (CLIPFormer prompts) flow from clip-labels files through the dataset, the collate
function and the engine to the model, in whole and slide evaluation."""

import json

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from changekit.data import ChangeDataset
from changekit.data.text_classes import FORMAT
from changekit.engine.change_task import model_inputs
from changekit.engine.datamodule import collate_pairs
from changekit.engine.inference import predict_logits


def _folder(tmp_path):
    root = tmp_path / "ds"
    for d in ("A", "B", "label"):
        (root / "test" / d).mkdir(parents=True)
    for name in ("x", "y"):
        for d in ("A", "B"):
            Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "test" / d / f"{name}.png")
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "test" / "label" / f"{name}.png")
    for d, classes in (("A", {"x": ["road"], "y": ["forest", "river"]}), ("B", {"x": ["building", "road"], "y": ["river"]})):
        images = {k: [[c, 0.5] for c in v] for k, v in classes.items()}
        (root / "test" / f"{d}_clipcls.json").write_text(json.dumps({"format": FORMAT, "images": images}))
    return root


class Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, t1, t2, classes_a=None, classes_b=None):
        self.seen.append((classes_a, classes_b))
        return torch.zeros(t1.shape[0], 2, *t1.shape[-2:])


def test_class_lists_reach_the_model(tmp_path):
    ds = ChangeDataset(_folder(tmp_path), "test", text_classes=True)
    items = [ds[i] for i in range(len(ds))]
    assert items[0]["classes_a"] == ["road"] and items[0]["classes_b"] == ["building", "road"]
    batch = collate_pairs(items)
    assert batch["t1"].shape == (2, 3, 32, 32)
    assert batch["classes_a"] == [["road"], ["forest", "river"]]  # one list per sample, not transposed
    model = Recorder()
    predict_logits(model, [batch["t1"], batch["t2"]], "slide", 16, 16, **model_inputs(batch))
    assert len(model.seen) == 4 and all(s == (batch["classes_a"], batch["classes_b"]) for s in model.seen)


def test_missing_class_file_is_a_clear_error(tmp_path):
    import pytest

    from changekit.errors import DataError

    root = _folder(tmp_path)
    (root / "test" / "B_clipcls.json").unlink()
    with pytest.raises(DataError, match="clip-labels"):
        ChangeDataset(root, "test", text_classes=True)


def test_exchange_swaps_class_lists():
    from changekit.data.transforms import ExchangeTime

    s = ExchangeTime(prob=1.0)({"t1": 1, "t2": 2, "classes_a": ["a"], "classes_b": ["b"]})
    assert (s["t1"], s["classes_a"], s["classes_b"]) == (2, ["b"], ["a"])


# --------------------------------------------------------------------------------------------- mm_slide
def _tiny_clip_file(tmp_path):
    from helpers.clip_toy import tiny_open_clip

    torch.manual_seed(0)
    clip = tiny_open_clip(text_layers=1)
    path = tmp_path / "tiny_clip.pt"
    torch.save(clip.state_dict(), path)
    return clip, path


def _two_halves(n: int = 32) -> np.ndarray:
    rng = np.random.default_rng(1)
    img = np.zeros((n, n, 3), np.float32)
    img[:, : n // 2] = rng.uniform(0, 255, (n, n // 2, 3))
    img[:, n // 2:] = rng.uniform(200, 255, (n, n - n // 2, 3))
    return img


def test_mm_slide_labels_every_window_with_clip(tmp_path):
    """The released mm_slide: every window gets the top-9 classes CLIP finds in *that window*, per date."""
    import pytest

    from changekit.errors import ConfigError
    from changekit.models.clipformer import RS_CLASSES_56
    from changekit.models.text.zero_shot import ClipZeroShot, load_window_labeller

    clip, path = _tiny_clip_file(tmp_path)
    mean, std = [100.0, 110.0, 120.0], [50.0, 55.0, 60.0]
    labeller = load_window_labeller(path, mean, std, (0, 255), top_k=9)
    a, b = _two_halves(), _two_halves()[::-1].copy()
    norm = lambda x: ((torch.from_numpy(x).permute(2, 0, 1) - torch.tensor(mean).view(3, 1, 1))
                      / torch.tensor(std).view(3, 1, 1))[None]
    t1, t2 = norm(a), norm(b)
    model = Recorder()
    out = predict_logits(model, [t1, t2], "mm_slide", 16, 16, labeller=labeller, classes_a=[["road"]], classes_b=[["sea"]])
    assert out.shape == (1, 2, 32, 32) and len(model.seen) == 4
    zs = ClipZeroShot(clip, RS_CLASSES_56)
    windows = [(0, 16, 0, 16), (0, 16, 16, 32), (16, 32, 0, 16), (16, 32, 16, 32)]
    assert [r["where"] for r in labeller.records] == windows
    for (y1, y2, x1, x2), (ca, cb), rec in zip(windows, model.seen, labeller.records):
        want_a = [c for c, _ in zs.rank([a[y1:y2, x1:x2]], 9)[0]]
        want_b = [c for c, _ in zs.rank([b[y1:y2, x1:x2]], 9)[0]]
        assert ca == [want_a] and cb == [want_b] and len(want_a) == 9  # the window's own lists replace the image's
        assert rec["classes_a"] == want_a and rec["classes_b"] == want_b
    assert model.seen[0][0] != model.seen[1][0]  # different content, different lists
    with pytest.raises(ConfigError, match="clip_weights"):
        predict_logits(Recorder(), [t1, t2], "mm_slide", 16, 16)
    with pytest.raises(ConfigError, match="no such file"):
        load_window_labeller(tmp_path / "ViT-B-16.pt", mean, std)


def test_mm_slide_config_and_test_run_write_the_class_lists(tmp_path, capsys):
    import lightning.pytorch as pl
    import pytest
    from helpers.clip_toy import TINY

    from changekit.engine.change_task import ChangeDetectionTask
    from changekit.engine.datamodule import ChangeDataModule
    from changekit.errors import ConfigError

    _, path = _tiny_clip_file(tmp_path)
    with pytest.raises(ConfigError, match="set model.eval.clip_weights"):
        ChangeDetectionTask("clipformer_swin-t_vit-b16", TINY, eval={"mode": "mm_slide", "window": 16, "stride": 16})
    with pytest.raises(ConfigError, match="only apply to mode mm_slide"):
        ChangeDetectionTask("clipformer_swin-t_vit-b16", TINY, eval={"mode": "slide", "window": 16, "stride": 16,
                                                                      "clip_weights": str(path)})
    root = _folder(tmp_path)
    for d in ("A", "B"):
        (root / "test" / f"{d}_clipcls.json").unlink()  # no class files: text_classes off
    dm = ChangeDataModule(dataset="folder", root=str(root), eval_batch_size=1, mean="imagenet", std="imagenet")
    task = ChangeDetectionTask("clipformer_swin-t_vit-b16", TINY,
                               eval={"mode": "mm_slide", "window": [16, 16], "stride": [16, 16],
                                     "clip_weights": str(path), "top_k": 5})
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path / "run"))
    trainer.test(task, datamodule=dm, verbose=False)
    said = capsys.readouterr().out
    assert "prompts: no class lists" in said and "CLIP zero-shot per window" in said
    written = tmp_path / "run" / "test_window_classes.json"
    assert f"test: 8 windows labelled with per-window CLIP zero-shot class lists ({path}, top 5 of 56 classes); " \
           f"class lists in {written}" in said
    data = json.loads(written.read_text())
    assert data["top_k"] == 5 and len(data["windows"]) == 8  # 2 images x 4 windows
    assert sorted(w["image"] for w in data["windows"]) == ["x"] * 4 + ["y"] * 4
    assert all(len(w["classes_a"]) == 5 and len(w["classes_b"]) == 5 for w in data["windows"])
    assert task.results["test"]["eval_mode"].startswith("mm_slide (window 16x16, stride 16x16, CLIP class lists")


def test_scene_clip_per_window_and_the_default_are_recorded(tmp_path):
    """changekit scene on CLIPFormer: --clip-per-window labels every window (lists in window_classes.json, also
    after a resume); without it scene.json says the prompts name no class; other models refuse the option."""
    import pytest
    from helpers.clip_toy import TINY
    from helpers.toys import DiffModel, write_scene_pair

    from changekit.errors import ConfigError
    from changekit.geo.scene import run_scene
    from changekit.models.clipformer import CLIPFormer

    _, path = _tiny_clip_file(tmp_path)
    write_scene_pair(tmp_path / "t1.tif", tmp_path / "t2.tif", size=(96, 128), block=32)
    torch.manual_seed(0)
    model = CLIPFormer(**TINY).eval()
    kw = dict(mean="imagenet", std="imagenet", window=64, overlap=32, batch_size=2, progress=False, vectors=False)
    s = run_scene(tmp_path / "t1.tif", tmp_path / "t2.tif", tmp_path / "a", model=model, clip_per_window=path,
                  clip_top_k=4, **kw)
    data = json.loads((tmp_path / "a" / "window_classes.json").read_text())
    assert len(data["windows"]) == s["windows"] == 6 and data["top_k"] == 4
    assert all(len(w["where"]) == 4 and len(w["classes_a"]) == 4 for w in data["windows"])
    assert sorted(tuple(w["where"]) for w in data["windows"]) == sorted(
        (x, y, 64, 64) for y in (0, 32) for x in (0, 32, 64))
    record = json.loads((tmp_path / "a" / "scene.json").read_text())
    assert "per-window CLIP zero-shot class lists" in record["text_classes"]

    class Stop(Exception):
        pass

    def stop(n):
        if n == 4:  # strip 0 (3 windows) is done, strip 1 is not
            raise Stop

    with pytest.raises(Stop):
        run_scene(tmp_path / "t1.tif", tmp_path / "t2.tif", tmp_path / "r", model=model, clip_per_window=path,
                  clip_top_k=4, on_window=stop, **kw)
    s = run_scene(tmp_path / "t1.tif", tmp_path / "t2.tif", tmp_path / "r", model=model, clip_per_window=path,
                  clip_top_k=4, **kw)
    resumed = json.loads((tmp_path / "r" / "window_classes.json").read_text())
    assert s["strips_resumed"] == 1 and resumed["windows"] == data["windows"]
    s = run_scene(tmp_path / "t1.tif", tmp_path / "t2.tif", tmp_path / "b", model=model, **kw)
    record = json.loads((tmp_path / "b" / "scene.json").read_text())
    assert record["text_classes"].startswith("no class lists") and not (tmp_path / "b" / "window_classes.json").exists()
    with pytest.raises(ConfigError, match="takes no class lists"):
        run_scene(tmp_path / "t1.tif", tmp_path / "t2.tif", tmp_path / "c", model=DiffModel(), clip_per_window=path, **kw)
