"""Per-image class names (CLIPFormer prompts) flow from clip-labels files through the dataset, the collate
function and the engine to the model, in whole and slide evaluation."""

import json

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from changekit.data import ChangeDataset
from changekit.data.text_classes import FORMAT
from changekit.engine.datamodule import collate_pairs
from changekit.engine.inference import predict_logits
from changekit.engine.task import model_inputs


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
    predict_logits(model, batch["t1"], batch["t2"], "slide", 16, 16, **model_inputs(batch))
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
