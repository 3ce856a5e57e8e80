import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from changekit.cli import main as cli
from changekit.metrics import (
    ConfusionMatrix,
    confusion_matrix,
    format_metrics_table,
    metrics_from_confusion,
    score_maps,
)


def test_hand_computed_confusion_and_metrics():
    # 4x4 map: labels with two ignored pixels; counted by hand below.
    label = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [0, 255, 1, 0], [255, 0, 0, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 1], [0, 1, 1, 0], [1, 0, 0, 1]])
    mat = confusion_matrix(pred, label, 2, 255)
    # label 0 (9 px): predicted 0 at 7, predicted 1 at 2; label 1 (5 px): predicted 1 at 4, 0 at 1.
    assert mat.tolist() == [[7, 2], [1, 4]]
    m = metrics_from_confusion(mat)
    assert m["precision"] == pytest.approx(4 / 6)
    assert m["recall"] == pytest.approx(4 / 5)
    assert m["f1"] == pytest.approx(2 * (4 / 6) * (4 / 5) / (4 / 6 + 4 / 5))
    assert m["iou"] == pytest.approx(4 / (6 + 5 - 4))
    assert m["oa"] == pytest.approx(11 / 14)
    pe = (8 * 9 + 6 * 5) / 14**2
    assert m["kappa"] == pytest.approx((11 / 14 - pe) / (1 - pe))
    assert m["miou"] == pytest.approx((7 / (8 + 9 - 7) + 4 / 7) / 2)
    assert m["per_class"]["iou"][0] == pytest.approx(7 / 10)
    assert m["pixels"] == 14


def test_logits_are_argmaxed_and_bad_labels_rejected():
    logits = torch.tensor([[[[2.0, -1.0]], [[0.0, 3.0]]]])  # (1,2,1,2): argmax -> [0, 1]
    assert confusion_matrix(logits, torch.tensor([[[0, 1]]]), 2).tolist() == [[1, 0], [0, 1]]
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[0, 7]]), 2, 255)


def _independent_metrics(pred, label, ignore):
    """Straightforward boolean-mask implementation, used as an oracle."""
    keep = label != ignore
    p, t = pred[keep], label[keep]
    out = {}
    tp = np.sum((p == 1) & (t == 1))
    fp = np.sum((p == 1) & (t == 0))
    fn = np.sum((p == 0) & (t == 1))
    tn = np.sum((p == 0) & (t == 0))
    out["precision"] = tp / (tp + fp)
    out["recall"] = tp / (tp + fn)
    out["f1"] = 2 * tp / (2 * tp + fp + fn)
    out["iou"] = tp / (tp + fp + fn)
    n = tp + fp + fn + tn
    out["oa"] = (tp + tn) / n
    pe = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / n**2
    out["kappa"] = (out["oa"] - pe) / (1 - pe)
    iou0 = tn / (tn + fn + fp)
    f10 = 2 * tn / (2 * tn + fn + fp)
    out["miou"] = (iou0 + out["iou"]) / 2
    out["mf1"] = (f10 + out["f1"]) / 2
    return out


def test_accumulated_over_batches_matches_oracle_on_random_maps():
    rng = np.random.default_rng(0)
    preds = rng.integers(0, 2, size=(6, 32, 40))
    labels = rng.integers(0, 2, size=(6, 32, 40))
    labels[rng.random(labels.shape) < 0.1] = 255
    metric = ConfusionMatrix(num_classes=2, ignore_index=255)
    for i in range(0, 6, 2):  # three batches of different content: counts must be summed, not averaged
        metric.update(torch.from_numpy(preds[i : i + 2]), torch.from_numpy(labels[i : i + 2]))
    got = metric.compute()
    want = _independent_metrics(preds, labels, 255)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-12), k
    # per-batch averaging would give a different F1: make sure we are not doing that
    per_batch = np.mean([_independent_metrics(preds[i : i + 2], labels[i : i + 2], 255)["f1"] for i in range(0, 6, 2)])
    assert got["f1"] != pytest.approx(per_batch, rel=1e-9)


def test_nan_when_class_absent_and_table_renders():
    m = metrics_from_confusion(np.array([[10, 0], [0, 0]]))
    assert math.isnan(m["recall"]) and math.isnan(m["iou"])
    assert m["miou"] == 1.0  # mean over defined classes only, like mmseg's nanmean
    text = format_metrics_table(m, mode="slide 512/256")
    assert "evaluation: slide 512/256" in text and "n/a" in text


def _write(path, arr):
    Image.fromarray(arr.astype(np.uint8)).save(path)


def test_score_command(tmp_path, capsys):
    pred_dir, label_dir = tmp_path / "pred", tmp_path / "label"
    pred_dir.mkdir()
    label_dir.mkdir()
    rng = np.random.default_rng(1)
    all_p, all_l = [], []
    for i in range(3):
        p = rng.integers(0, 2, size=(16, 16))
        lab = rng.integers(0, 2, size=(16, 16))
        _write(pred_dir / f"img{i}.png", p * 255)
        _write(label_dir / f"img{i}.png", lab * 255)  # 0/255 labels: 255 means change
        all_p.append(p)
        all_l.append(lab)
    assert cli(["score", str(pred_dir), str(label_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = _independent_metrics(np.stack(all_p), np.stack(all_l), 255)
    for k in ("precision", "recall", "f1", "iou", "oa", "kappa", "miou", "mf1"):
        assert out[k] == pytest.approx(want[k], rel=1e-12), k


def test_score_command_errors(tmp_path):
    from changekit.errors import DataError

    pred_dir, label_dir = tmp_path / "pred", tmp_path / "label"
    pred_dir.mkdir()
    label_dir.mkdir()
    _write(pred_dir / "a.png", np.zeros((4, 4)))
    _write(label_dir / "b.png", np.zeros((4, 4)))
    with pytest.raises(DataError, match="no prediction for 1 label"):
        score_maps(pred_dir, label_dir)
    _write(label_dir / "a.png", np.full((4, 4), 7))
    (label_dir / "b.png").unlink()
    with pytest.raises(DataError, match="a.png: label values"):
        score_maps(pred_dir, label_dir)
    # through the command: one line naming the file, exit 2
    assert cli(["score", str(pred_dir), str(label_dir)]) == 2
