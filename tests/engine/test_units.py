"""Engine building blocks: loss, parameter groups, lr schedule, slide inference, writers (fast, no training)."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from changekit.engine.inference import predict_logits, slide_windows
from changekit.engine.losses import ChangeLoss, cross_entropy
from changekit.engine.optim import build_optimizer, build_param_groups, build_scheduler, warmup_poly_factor
from changekit.engine.writers import OVERLAY_COLOURS, error_overlay, write_change_map
from changekit.errors import ConfigError


# ----------------------------------------------------------------------------------------------- loss
def test_ce_mean_over_all_pixels_like_mmseg():
    logits = torch.randn(2, 2, 4, 4)
    target = torch.randint(0, 2, (2, 4, 4))
    target[0, :2] = 255
    per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    assert torch.allclose(cross_entropy(logits, target), per_pixel.sum() / target.numel())
    valid = (target != 255).sum()
    assert torch.allclose(cross_entropy(logits, target, avg_non_ignore=True), per_pixel.sum() / valid)


def test_loss_resizes_logits_and_adds_dice():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    target = torch.randint(0, 2, (1, 8, 8))
    total, parts = ChangeLoss({"ce": 1.0, "dice": 0.5})(logits, target)
    up = F.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(parts["ce"], F.cross_entropy(up, target))
    assert 0 <= float(parts["dice"].detach()) <= 0.5
    assert torch.allclose(total, parts["ce"] + parts["dice"])
    total.backward()
    # a perfect prediction has (near) zero dice loss
    perfect = F.one_hot(target, 2).permute(0, 3, 1, 2).float() * 50
    assert float(ChangeLoss({"dice": 1.0})(perfect, target)[0]) < 1e-3
    with pytest.raises(ConfigError):
        ChangeLoss({"focal": 1.0})


# ----------------------------------------------------------------------------------------------- param groups
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.backbone_norm = nn.LayerNorm(4)
        self.mask_decoder = nn.Sequential(nn.Conv2d(4, 2, 1))
        self.mask_decoder.add_module("norm", nn.BatchNorm2d(2))
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def _group_of(groups, name):
    return next(g for g in groups if name in g["param_names"])


def test_param_groups_longest_pattern_wins_and_norm_decay():
    net = _Net()
    groups = build_param_groups(
        net.named_parameters(),
        lr=1e-4,
        weight_decay=1e-2,
        param_groups=[{"pattern": "mask_decoder", "lr_mult": 10}, {"pattern": "backbone.*", "lr_mult": 0.1}, {"pattern": "mask_decoder.norm", "decay_mult": 0}],
        no_decay_norm=True,
    )
    names = [n for g in groups for n in g["param_names"]]
    assert not any(n.startswith("frozen") for n in names), "frozen parameters must not be optimised"
    assert len(names) == len(set(names)) == sum(1 for _, p in net.named_parameters() if p.requires_grad)
    g = _group_of(groups, "mask_decoder.0.weight")
    assert (g["lr"], g["weight_decay"]) == (pytest.approx(1e-3), pytest.approx(1e-2))
    g = _group_of(groups, "mask_decoder.norm.weight")  # longest pattern: lr x1, no decay
    assert (g["lr"], g["weight_decay"]) == (pytest.approx(1e-4), 0.0)
    g = _group_of(groups, "backbone.1.weight")  # fnmatch pattern
    assert (g["lr"], g["weight_decay"]) == (pytest.approx(1e-5), pytest.approx(1e-2))
    g = _group_of(groups, "backbone_norm.weight")  # no pattern matches ('backbone.*' needs the dot): norm rule
    assert (g["lr"], g["weight_decay"]) == (pytest.approx(1e-4), 0.0)
    opt = build_optimizer(groups, {"type": "sgd", "lr": 1e-4, "momentum": 0.9})
    assert isinstance(opt, torch.optim.SGD) and len(opt.param_groups) == len(groups)
    with pytest.raises(ConfigError):
        build_param_groups(net.named_parameters(), 1e-4, 0, [{"lr_mult": 2}])


# ----------------------------------------------------------------------------------------------- schedule
def _mmengine_chained(n_iters, base, warmup, start, max_iters, power, eta_min):
    """mmengine LinearLR(begin=0,end=warmup) + PolyLR(begin=warmup,end=max_iters) in their chainable form."""
    lrs, lr = [], base
    for it in range(n_iters):
        if it < warmup:
            total = warmup - 1
            lr = base * start if it == 0 else lr * (1 + (1 - start) / (total * start + (it - 1) * (1 - start)))
        elif it < max_iters:
            total, step = max_iters - warmup - 1, it - warmup
            if step > 0:
                lr = (lr - eta_min) * (1 - 1 / (total - step + 1)) ** power + eta_min
        lrs.append(lr)
    return lrs


def test_warmup_poly_matches_mmengine_schedulers():
    kw = dict(warmup_iters=5, warmup_start_factor=1e-6, max_iters=25, power=0.9, min_lr=1e-6)
    ref = _mmengine_chained(25, 1e-2, 5, 1e-6, 25, 0.9, 1e-6)
    ours = [1e-2 * warmup_poly_factor(it, 1e-2, **kw) for it in range(25)]
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-15)
    # the BAN recipe at named iterations
    ban = dict(warmup_iters=1000, warmup_start_factor=1e-6, max_iters=40000, power=1.0, min_lr=0.0)
    assert warmup_poly_factor(0, 1e-4, **ban) == pytest.approx(1e-6)
    assert warmup_poly_factor(999, 1e-4, **ban) == pytest.approx(1.0)
    assert warmup_poly_factor(1000, 1e-4, **ban) == pytest.approx(1.0)
    assert warmup_poly_factor(20499, 1e-4, **ban) == pytest.approx(1 - 19499 / 38999)
    assert warmup_poly_factor(39999, 1e-4, **ban) == 0.0
    assert warmup_poly_factor(50000, 1e-4, **ban) == 0.0


def test_scheduler_steps_every_param_group():
    net = _Net()
    groups = build_param_groups(net.named_parameters(), 1e-3, 0.0, [{"pattern": "mask_decoder", "lr_mult": 10}])
    opt = build_optimizer(groups, {"lr": 1e-3})
    sched = build_scheduler(opt, {"warmup_iters": 3, "warmup_start_factor": 0.1, "power": 1.0}, max_iters=13)
    seen = []
    for _ in range(13):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    lrs = {g["name"]: [s[i] for s in seen] for i, g in enumerate(opt.param_groups)}
    np.testing.assert_allclose(lrs["default"][:4], [1e-4, 5.5e-4, 1e-3, 1e-3])
    np.testing.assert_allclose(lrs["mask_decoder"][:3], [1e-3, 5.5e-3, 1e-2])
    assert lrs["default"][-1] == pytest.approx(0.0, abs=1e-12)  # poly to 0 at max_iters - 1
    assert lrs["default"][8] == pytest.approx(1e-3 * (1 - 5 / 9))


# ----------------------------------------------------------------------------------------------- inference
def test_slide_windows_like_mmseg():
    assert slide_windows(5, 5, (3, 3), (2, 2))[:2] == [(0, 3, 0, 3), (0, 3, 2, 5)]
    ys = sorted({(y1, y2) for y1, y2, _, _ in slide_windows(6, 6, (4, 4), (3, 3))})
    assert ys == [(0, 4), (2, 6)]  # last window clamped to the border
    assert slide_windows(2, 3, (4, 4), (3, 3)) == [(0, 2, 0, 3)]  # smaller than the window: whole image
    assert len(slide_windows(1024, 1024, (512, 512), (256, 256))) == 9  # BAN's LEVIR-CD test setting


class _RowIndex(nn.Module):
    """Logits: channel 0 = row index inside the window, channel 1 = 1 everywhere."""

    def forward(self, t1, t2):
        b, _, h, w = t1.shape
        rows = torch.arange(h, dtype=t1.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
        return torch.cat([rows, torch.ones_like(rows)], 1)


def test_slide_averages_overlaps_by_hand():
    x = torch.zeros(1, 3, 5, 4)
    out = predict_logits(_RowIndex(), [x, x], mode="slide", window=(3, 4), stride=(2, 2))
    # windows on rows 0..2 and 2..4: row 2 is seen as local row 2 and as local row 0 -> mean 1
    assert out[0, 0, :, 0].tolist() == [0.0, 1.0, 1.0, 1.0, 2.0]
    assert torch.all(out[:, 1] == 1)  # constant logits stay constant: the count matrix is right


def test_slide_equals_whole_for_pointwise_model():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 2, 1)
    model = lambda a, b: conv(torch.cat([a, b], 1))
    t1, t2 = torch.randn(2, 3, 37, 50), torch.randn(2, 3, 37, 50)
    whole = predict_logits(model, [t1, t2], mode="whole")
    slide = predict_logits(model, [t1, t2], mode="slide", window=16, stride=(10, 12))
    torch.testing.assert_close(slide, whole, rtol=0, atol=1e-5)
    with pytest.raises(ConfigError):
        predict_logits(model, [t1, t2], mode="slide")
    with pytest.raises(ConfigError):
        predict_logits(model, [t1, t2], mode="tiles")


# ----------------------------------------------------------------------------------------------- writers
def test_overlay_colours_and_binary_map(tmp_path):
    from PIL import Image

    pred = np.array([[1, 0], [1, 0], [1, 1]])
    label = np.array([[1, 0], [0, 1], [255, 255]])
    ov = error_overlay(pred, label)
    assert tuple(ov[0, 0]) == OVERLAY_COLOURS["tp"] == (255, 255, 255)
    assert tuple(ov[0, 1]) == OVERLAY_COLOURS["tn"] == (0, 0, 0)
    assert tuple(ov[1, 0]) == OVERLAY_COLOURS["fp"] == (255, 0, 0)
    assert tuple(ov[1, 1]) == OVERLAY_COLOURS["fn"] == (0, 255, 0)
    assert tuple(ov[2, 0]) == OVERLAY_COLOURS["ignore"]
    p = write_change_map(tmp_path / "m.png", torch.tensor(pred, dtype=torch.uint8))
    arr = np.array(Image.open(p))
    assert arr.dtype == np.uint8 and set(np.unique(arr)) == {0, 255}
    assert (arr == np.where(pred > 0, 255, 0)).all()
    assert not any(f.name.endswith(".tmp") for f in tmp_path.iterdir())
    assert math.isfinite(float(arr.mean()))


def test_ohem_keeps_hard_pixels_like_mmseg():
    from changekit.engine.losses import ohem_weights

    # 1 image, 6 pixels; probability of the true class: via logits for class 0 (target 0 everywhere)
    p = torch.tensor([0.95, 0.9, 0.6, 0.3, 0.8, 0.99])
    logits = torch.stack([torch.log(p), torch.log(1 - p)]).view(1, 2, 1, 6)
    target = torch.zeros(1, 1, 6, dtype=torch.long)
    target[0, 0, 5] = 255
    # thresh 0.7, min_kept 1: threshold = max(0.7, 2nd smallest valid prob 0.8) = 0.8 -> keep 0.6, 0.3
    w = ohem_weights(logits, target, thresh=0.7, min_kept=1)
    assert w.flatten().tolist() == [0, 0, 1, 1, 0, 0]
    # min_kept larger than the valid count: threshold = max(0.7, largest valid prob 0.95) -> keep all below 0.95
    assert ohem_weights(logits, target, 0.7, 100).flatten().tolist() == [0, 1, 1, 1, 1, 0]
    loss, parts = ChangeLoss({"ohem": {"thresh": 0.7, "min_kept": 1}})(logits, target)
    ce = F.cross_entropy(logits, target, ignore_index=255, reduction="none").flatten()
    assert torch.allclose(loss, (ce[2] + ce[3]) / 6)  # mean over all pixels, as mmseg's decode-head loss


def test_eval_resize_keeps_ratio_and_returns_input_size():
    seen = []

    def model(a, b):
        seen.append(tuple(a.shape[-2:]))
        return torch.zeros(a.shape[0], 2, *a.shape[-2:])

    x = torch.zeros(1, 3, 50, 100)
    out = predict_logits(model, [x, x], mode="whole", resize=(200, 200))
    assert seen == [(100, 200)] and out.shape[-2:] == (50, 100)
    seen.clear()
    predict_logits(model, [x, x], mode="whole", resize=(100, 50))  # fits (h, w) in either orientation: no-op
    assert seen == [(50, 100)]


def test_linear_epoch_policy_is_bit_cds_lambda_lr():
    """BIT_CD's lr_policy 'linear' (LambdaLR(1 - epoch / (max_epochs + 1)), stepped per epoch), iteration by
    iteration: constant inside an epoch, 2/(E+1) of the base in the last epoch."""
    net = nn.Linear(2, 2)
    opt = build_optimizer(build_param_groups(net.named_parameters(), lr=0.01, weight_decay=5e-4),
                          {"type": "sgd", "lr": 0.01, "momentum": 0.9})
    epochs, per_epoch = 4, 3
    sched = build_scheduler(opt, {"policy": "linear_epoch", "max_epochs": epochs, "iters_per_epoch": per_epoch},
                            epochs * per_epoch)
    seen = []
    for _ in range(epochs * per_epoch):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # the reference: a torch LambdaLR stepped once per epoch
    ref_opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.01)
    ref = torch.optim.lr_scheduler.LambdaLR(ref_opt, lambda e: 1.0 - e / float(epochs + 1))
    want = []
    for _ in range(epochs):
        want += [ref_opt.param_groups[0]["lr"]] * per_epoch
        ref_opt.step()
        ref.step()
    assert seen == pytest.approx(want) and seen[-1] == pytest.approx(0.01 * 2 / 5)  # last epoch: 2/(E+1)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 5e-4
    with pytest.raises(ConfigError, match="epoch-based run"):
        build_scheduler(opt, {"policy": "linear_epoch"}, 10)
    with pytest.raises(ConfigError, match="takes no"):
        build_scheduler(opt, {"policy": "linear_epoch", "max_epochs": 2, "iters_per_epoch": 2, "power": 2}, 10)
    with pytest.raises(ConfigError, match="policy 'cosine'"):
        build_scheduler(opt, {"policy": "cosine"}, 10)


def test_bit_cd_recipe_config():
    from pathlib import Path

    from changekit.config import load_config

    cfg = load_config(Path(__file__).parents[2] / "configs/bit/bit_r18_256x256_200e_levircd_bitcd.yaml")
    m, d = cfg["model"], cfg["data"]
    assert m["arch"] == "bit_r18" and m["optimizer"] == {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005}
    assert m["schedule"] == {"policy": "linear_epoch"} and cfg["trainer"]["max_epochs"] == 200
    assert d["batch_size"] == 8 and d["crop_size"] == [256, 256] and d["mean"] == d["std"] == [127.5] * 3
    assert d["augment"]["rescale"] == [1.0, 1.2] and d["augment"]["blur"] == 1.0 and not d["augment"]["rotate"]


def test_class_maps_are_palette_pngs_and_overlays_mark_errors(tmp_path):
    import numpy as np
    from PIL import Image

    from changekit.engine.writers import write_prediction

    palette = [[10, 20, 30], [40, 50, 60], [70, 80, 90]]
    pred = np.array([[0, 1, 2], [2, 2, 0]])
    label = np.array([[0, 2, 2], [255, 2, 1]])
    write_prediction({"name": ["a"], "pred": [pred], "label": [label]}, tmp_path, palette=palette)
    im = Image.open(tmp_path / "maps" / "a.png")
    assert im.mode == "P" and np.array(im).tolist() == pred.tolist()
    assert np.array(im.convert("RGB"))[0, 2].tolist() == [70, 80, 90]
    ov = np.array(Image.open(tmp_path / "overlays" / "a.png"))
    assert ov[0, 0].tolist() == [10, 20, 30] and ov[0, 1].tolist() == [255, 0, 255]  # right / wrong
    assert ov[1, 0].tolist() == [128, 128, 128] and ov[1, 2].tolist() == [255, 0, 255]  # ignored / wrong
    write_prediction({"name": ["b"], "pred": [pred]}, tmp_path, palette=palette, value_offset=1)  # reduce-zero sets
    im = Image.open(tmp_path / "maps" / "b.png")
    assert np.array(im).tolist() == (pred + 1).tolist() and np.array(im.convert("RGB"))[0, 2].tolist() == [70, 80, 90]


def test_lightning_runs_print_no_cloud_logger_advert(tmp_path, caplog):
    import logging

    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    import changekit.engine  # noqa: F401  (installs the filter)

    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        pl.Trainer(logger=CSVLogger(str(tmp_path)), accelerator="cpu", enable_progress_bar=False)
    assert not [r for r in caplog.records if "litlogger" in r.getMessage()]
