"""Semantic change detection: SCD metrics (hand-computed), the BAN-SCD model, the SCD task (loss falls)."""

from __future__ import annotations

import math

import pytest
import torch

import changekit
from changekit.config import load_config
from changekit.metrics.scd import SCDConfusion, scd_metrics_from_confusion, sek_from_confusion

TINY_FM = dict(kind="clip", patch_size=8, img_size=32, embed_dim=64, num_heads=2, num_layers=3, out_indices=(0, 1, 2))


# ----------------------------------------------------------------------------------------------- metrics
def test_sek_and_scd_score_hand_computed():
    # semantic confusion S[label, pred] summed over both dates; binary change confusion B[label, pred]
    sem = torch.tensor([[10, 2, 1], [3, 5, 1], [0, 1, 4]])
    binary = torch.tensor([[20, 2], [3, 5]])
    # (0,0) = 10 removed: I = [0,5,4], L = [3,9,5], P = [3,8,6], N = 17
    po, pe = 9 / 17, (3 * 3 + 9 * 8 + 5 * 6) / 17**2
    kappa0 = (po - pe) / (1 - pe)
    assert kappa0 == pytest.approx(21 / 89)
    iou_fg = (9 + 5 - 3) / 17  # sum(L[1:]) - P[0], over N
    sek = kappa0 * math.exp(iou_fg) / math.e
    m = scd_metrics_from_confusion(binary, sem)
    assert m["kappa0"] == pytest.approx(kappa0, rel=1e-12)
    assert m["iou_fg"] == pytest.approx(iou_fg, rel=1e-12)
    assert m["sek"] == pytest.approx(sek, rel=1e-12)
    assert m["sek"] == pytest.approx(21 / 89 * math.exp(-6 / 17), rel=1e-12)
    # binary: IoU unchanged 20/25, changed 5/10; SCD score uses the two-class mean (open-cd's summary "IoU")
    assert (m["iou"], m["miou"]) == pytest.approx((0.5, 0.65))
    assert m["f1"] == pytest.approx(2 * (5 / 7) * (5 / 8) / (5 / 7 + 5 / 8))
    assert m["scd_score"] == pytest.approx(0.3 * 0.65 + 0.7 * sek, rel=1e-12)
    # semantic mIoU over the joint confusion: 10/16, 5/12, 4/7
    assert m["sem_miou"] == pytest.approx((10 / 16 + 5 / 12 + 4 / 7) / 3)
    assert m["sem_oa"] == pytest.approx(19 / 27)


def test_sek_perfect_and_all_background():
    perfect = sek_from_confusion(torch.tensor([[50, 0, 0], [0, 7, 0], [0, 0, 3]]))
    assert perfect == pytest.approx({"kappa0": 1.0, "iou_fg": 1.0, "sek": 1.0})
    # everything predicted background: po = 0 after removing (0,0); pe = 0 -> kappa0 = 0, SeK = 0
    none = sek_from_confusion(torch.tensor([[40, 0, 0], [6, 0, 0], [4, 0, 0]]))
    assert none["kappa0"] == pytest.approx(0.0) and none["sek"] == pytest.approx(0.0)
    assert none["iou_fg"] == pytest.approx((6 + 4 - 10) / 10)
    assert math.isnan(sek_from_confusion(torch.tensor([[5, 0], [0, 0]]))["sek"])  # only (0,0): undefined


def test_scd_confusion_accumulates_both_dates_and_ignores_255():
    ch = torch.tensor([[[0, 1], [1, 0]]])
    ch_lab = torch.tensor([[[0, 1], [0, 255]]])
    s1, s1_lab = torch.tensor([[[0, 1], [2, 2]]]), torch.tensor([[[0, 1], [2, 255]]])
    s2, s2_lab = torch.tensor([[[0, 0], [1, 2]]]), torch.tensor([[[1, 0], [1, 2]]])
    metric = SCDConfusion(3)
    metric.update(ch, ch_lab, s1, s1_lab, s2, s2_lab)
    assert metric.binary.tolist() == [[1, 1], [0, 1]]
    assert metric.sem.tolist() == [[2, 0, 0], [1, 2, 0], [0, 0, 2]]
    # two half-batches (or two processes, whose states torchmetrics sums) give the same counts
    split = SCDConfusion(3)
    for sl in (slice(0, 1), slice(1, 2)):
        split.update(*(t[:, sl] for t in (ch, ch_lab, s1, s1_lab, s2, s2_lab)))
    assert torch.equal(split.binary, metric.binary) and torch.equal(split.sem, metric.sem)
    out = metric.compute()
    assert out["sem_confusion"] == metric.sem.tolist() and out["pixels"] == 3


# ----------------------------------------------------------------------------------------------- model
def test_registry_names_and_full_size_heads():
    names = changekit.list_models()
    for n in ("ban-scd_vit-l14-clip_mit-b0", "ban-scd_vit-l14-clip_mit-b2", "ban-scd"):
        assert n in names
    from changekit.models.summary import parameter_counts

    m = changekit.build_model("ban-scd_vit-l14-clip_mit-b0", fm_init="meta")
    head = m.decode_head
    assert [c.conv.in_channels for c in head.binary_cd_head.convs] == [64, 128, 320, 512]  # both dates concatenated
    assert [c.conv.in_channels for c in head.semantic_cd_head.convs] == [32, 64, 160, 256]
    assert head.binary_cd_head.conv_seg.out_channels == 2 and head.semantic_cd_head.conv_seg.out_channels == 3
    assert head.binary_cd_head.discriminator.layers[0].out_channels == 256  # MixFFN hidden = channels
    c = parameter_counts(m)
    trainable = c["params_trainable"]
    assert trainable == parameter_counts(m.decode_head)["params_total"] == 5_398_953


def test_tiny_scd_forward_shapes_and_state_dict_round_trip(tmp_path):
    model = changekit.build_model("ban-scd", fm=dict(TINY_FM), bitab="mit-b0").eval()
    t1, t2 = torch.randn(2, 3, 64, 96), torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = model.forward_scd(t1, t2)
        plain = model(t1, t2)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"change": (2, 2, 64, 96), "sem1": (2, 3, 64, 96),
                                                           "sem2": (2, 3, 64, 96)}
    assert torch.allclose(plain, out["change"], atol=1e-6)  # forward = the change map, a normal change model
    assert model.forward_decoder(t1, t2).shape == (2, 2, 16, 24)
    keys = model.state_dict().keys()
    for k in ("decode_head.side_adapter_network.conv_clips.0.1.conv.weight", "decode_head.binary_cd_head.conv_seg.weight",
              "decode_head.semantic_cd_head.fusion_conv.bn.running_mean", "decode_head.semantic_cd_head.discriminator.layers.4.bias"):
        assert k in keys
    path = tmp_path / "scd.pth"
    torch.save(model.state_dict(), path)
    again = changekit.build_model("ban-scd", fm=dict(TINY_FM), bitab="mit-b0", weights=str(path)).eval()
    with torch.no_grad():
        assert torch.equal(again.forward_scd(t1, t2)["sem2"], out["sem2"])


# ----------------------------------------------------------------------------------------------- task
def _synthetic(n: int, g: torch.Generator) -> list[dict]:
    """Date 2 gains a building (roof square, facade rim) where the image brightens; date 1 is background."""
    items = []
    for i in range(n):
        t1 = torch.randn(3, 64, 64, generator=g)
        t2 = torch.clone(t1)  # date 2 starts as date 1, then gains a building
        sem2 = torch.zeros(64, 64, dtype=torch.long)
        y, x = torch.randint(4, 36, (2,), generator=g).tolist()
        t2[:, y - 2:y + 26, x - 2:x + 26] -= 1.5
        t2[:, y:y + 24, x:x + 24] += 3.5
        sem2[y - 2:y + 26, x - 2:x + 26] = 2
        sem2[y:y + 24, x:x + 24] = 1
        label = (sem2 > 0).long()
        label[0, :] = 255  # an ignored row
        items.append({"t1": t1, "t2": t2, "label": label, "label_sem1": torch.zeros(64, 64, dtype=torch.long),
                      "label_sem2": sem2, "name": f"s{i}"})
    return items


def test_semantic_change_task_loss_falls_and_scd_metrics():
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from changekit.engine.scd_task import SemanticChangeTask

    pl.seed_everything(0, verbose=False)
    data = _synthetic(4, torch.Generator().manual_seed(1))
    task = SemanticChangeTask("ban-scd", {"fm": dict(TINY_FM), "bitab": "mit-b0", "channels": 32},
                              optimizer={"type": "adamw", "lr": 2e-3, "weight_decay": 0.01},
                              param_groups=[{"pattern": "cd_head", "lr_mult": 2.0}], no_decay_norm=True,
                              eval={"mode": "slide", "window": [64, 64], "stride": [32, 32]})
    task.print_tables = False
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = pl.Trainer(accelerator="cpu", max_steps=14, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()],
                         num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(task, DataLoader(data, batch_size=2, shuffle=True))
    assert task.model.image_encoder.model.patch_embed.proj.weight.grad is None  # FM frozen
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3, losses
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.validate(task, DataLoader(data, batch_size=2), verbose=False)
    r = task.results["val"]
    assert r["pixels"] == 4 * 63 * 64 and r["sem_pixels"] == 2 * 4 * 64 * 64
    for k in ("sek", "scd_score", "sem_miou", "kappa0", "iou_fg"):
        assert 0.0 <= r[k] <= 1.0 or r[k] != r[k], (k, r[k])
    assert r["scd_score"] == pytest.approx(0.3 * r["miou"] + 0.7 * r["sek"])
    assert trainer.callback_metrics["val/sek"] == pytest.approx(r["sek"])


def test_semantic_task_needs_semantic_model_and_labels():
    from changekit.engine.scd_task import SemanticChangeTask
    from changekit.errors import ConfigError

    with pytest.raises(ConfigError, match="forward_scd"):
        SemanticChangeTask("fc_siam_diff", {"base_channel": 4})
    with pytest.raises(ConfigError, match="semantic: true"):
        SemanticChangeTask._labels({"label": torch.zeros(1)})


SCD_CONFIG = """\
seed_everything: 0
task: semantic-change
model:
  arch: ban-scd
  arch_args: {{fm: {{kind: clip, patch_size: 8, img_size: 32, embed_dim: 64, num_heads: 2, num_layers: 3,
              out_indices: [0, 1, 2]}}, bitab: mit-b0, channels: 32}}
  num_semantic_classes: 3
  optimizer: {{type: adamw, lr: 0.001, weight_decay: 0.01}}
  param_groups: [{{pattern: cd_head, lr_mult: 10.0}}]
data:
  dataset: bandon
  root: {root}
  dataset_args: {{semantic: true}}
  batch_size: 2
  eval_batch_size: 1
  crop_size: 32
  augment: {{rotate: false, photometric: false}}
  mean: clip
  std: clip
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 2
  val_check_interval: 2
  enable_progress_bar: false
  enable_model_summary: false
  num_sanity_val_steps: 0
"""


def test_cli_fit_and_test_on_miniature_bandon(tmp_path, monkeypatch, capsys):
    """`changekit fit/test` with a BANDON semantic config: the datamodule feeds label_sem1/2, SCD metrics come out."""
    from helpers.dataset_files import bandon as _bandon

    from changekit.cli import main as changekit_main

    root = tmp_path / "BANDON"
    _bandon(root, "train", "labels_unch0ch1ig255", enc255=False)
    _bandon(root, "val", "labels", enc255=True)
    _bandon(root, "test/test", "labels_unch0ch1ig255", enc255=False)  # BAN's in-domain test split
    _bandon(root, "test/test_ood", "labels_unch0ch1ig255", enc255=False, cities=("cq", "szx", "wh"))  # other cities
    cfg = tmp_path / "scd.yaml"
    cfg.write_text(SCD_CONFIG.format(root=root))
    monkeypatch.chdir(tmp_path)
    out_root = ["--output_root", str(tmp_path / "outputs")]
    assert changekit_main(["fit", "-c", str(cfg), *out_root]) == 0
    last = tmp_path / "outputs" / "scd" / "checkpoints" / "last.ckpt"
    ck = torch.load(last, weights_only=True)
    assert ck["global_step"] == 2 and ck["hyper_parameters"]["num_semantic_classes"] == 3
    capsys.readouterr()
    assert changekit_main(["test", "--ckpt_path", str(last), *out_root]) == 0  # the task class comes from the checkpoint
    out = capsys.readouterr().out
    assert "SeK" in out and "facade" in out
    import json

    res = json.loads((tmp_path / "outputs" / "scd" / "metrics_test.json").read_text())
    assert res["sem_pixels"] == 2 * 4 * 32 * 32 and "scd_score" in res and res["split"] == "test/test"
    # the documented switch: the out-of-domain split, SCD metrics in their own file beside the in-domain ones
    assert changekit_main(["test", "--ckpt_path", str(last), "--data.test_split", "test/test_ood", *out_root]) == 0
    assert "test/test_ood split" in capsys.readouterr().out
    ood = json.loads((tmp_path / "outputs" / "scd" / "metrics_test_ood.json").read_text())
    assert ood["split"] == "test/test_ood" and ood["sem_pixels"] == 2 * 6 * 32 * 32 and "sek" in ood
    assert json.loads((tmp_path / "outputs" / "scd" / "metrics_test.json").read_text()) == res  # not overwritten


def test_bandon_configs_build_and_run_at_512():
    """Both BANDON configs: recipe values of the BAN repository, model built shape-only (meta), SCD outputs at 512."""
    from pathlib import Path


    configs = sorted((Path(__file__).parents[2] / "configs" / "ban_scd").glob("*bandon.yaml"))
    assert [p.stem.split("_")[2] for p in configs] == ["mit-b0", "mit-b2"]
    t = torch.randn(1, 3, 512, 512, device="meta")
    for path in configs:
        cfg = load_config(path)
        m, d = cfg["model"], cfg["data"]
        assert path.stem.startswith(m["arch"] + "_512x512_40k_")
        assert m["optimizer"]["weight_decay"] == 0.01 and m["param_groups"] == [{"pattern": "cd_head", "lr_mult": 10.0}]
        assert m["num_semantic_classes"] == 3 and d["dataset_args"] == {"semantic": True} and d["dataset"] == "bandon"
        assert m["eval"]["mode"] == "slide" and m["schedule"]["max_iters"] == cfg["trainer"]["max_steps"] == 40000
        model = changekit.build_model(path, fm_weights=None, bitab_weights=None, fm_init="meta").eval().to("meta")
        with torch.no_grad():
            out = model.forward_scd(t, t)
        assert [tuple(v.shape) for v in out.values()] == [(1, 2, 512, 512), (1, 3, 512, 512), (1, 3, 512, 512)]
