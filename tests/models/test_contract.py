"""The model and config contract, checked over everything registered and every YAML in configs/.

* Every registered model: builds at full size (frozen foundation models shape-only), reports the parameter
  counts ``changekit info`` prints, and, at a tiny width, maps two (B, C, H, W) inputs to (B, num_classes, H, W)
  logits (square and not) whose weights round-trip strictly through ``changekit.load_weights``.
* Every config: merges its ``_base_`` files, names a registered model that builds from its arch_args, and its
  model / data / trainer sections pass the same jsonargparse validation LightningCLI applies.
* One short training run per family: the loss falls, frozen parameters stay as they are.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers.tiny_models import TINY, TINY_BACKBONES, tiny_model

import changekit
from changekit.config import load_config
from changekit.models.base import ChangekitModel
from changekit.models.registry import family_of, published, without_weights
from changekit.models.summary import model_info, parameter_counts

CONFIGS = sorted(p for p in (Path(__file__).parents[2] / "configs").rglob("*.yaml") if "_base_" not in p.parts)
MODELS = changekit.list_models()

#: Parameter totals of the released/reference builds (the family tests check the rest of the table).
PUBLISHED_TOTALS = {
    "fc_siam_diff": 1_352_210,
    "fc_ef": 1_352_642,  # open-cd's fcsn.py (tests/models/test_fc_siam.py: goldens from it)
    "fc_siam_conc": 1_548_050,
    "bit_r18": 2_989_638,
    "changeformer_mit-b0": 3_846_754,
    "changeformer_mit-b1": 13_940_930,
    "ban_vit-b16-clip_mit-b0": 68_883_622,
    "ban_vit-l14-clip_bit": 231_734_858,
    "dsqnet_swin-t": 29_074_574,  # the released build (tests/models/test_dsqnet.py: goldens from the released code)
    "dsqnet_vitaev2-s": 20_307_676,
    "dsqnet-2408_swin-t": 27_757_284,
    "dsqnet-2408_vitaev2-s": 19_036_466,
    "clipformer_swin-t_vit-b16": 114_860_668,
    "unet_r50_early": 32_530_658,  # smp Unet(resnet50, in_channels=6), as the paper builds it
    "mcat-unet_segnext-s": 22_913_292,  # the released build (tests/models/test_mcat_unet.py: goldens from the released code)
}

# ---------------------------------------------------------------------------------------------- models
def test_every_family_has_a_tiny_setting():
    assert {family_of(n) for n in MODELS} <= set(TINY)


def test_published_results_are_registered_with_their_models():
    assert published("fc_siam_diff") == [("LEVIR-CD", 87.31, "open-cd configs/fcsn/README.md")]
    assert [d for d, _, _ in published("ban_vit-l14-clip_mit-b0")] == ["LEVIR-CD", "S2Looking"]
    assert published("fc_ef") == [] and published("no-such-model") == []
    rows = {n for n in MODELS if published(n)}
    assert len(rows) == 22 and all(0 < f1 < 100 and src for n in rows for _, f1, src in published(n))


def test_a_model_refuses_the_wrong_number_of_dates():
    model = changekit.build_model("fc_siam_diff")
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(TypeError, match="takes 2 dates, got 1 positional"):
        model(x)
    with pytest.raises(TypeError, match="takes one image, got 2 positional"):
        tiny_model("mcat-unet_segnext-s")(x, x)


@pytest.mark.parametrize("name", MODELS)
def test_full_size_build_and_counts(name):
    kw = {"fm_init": "meta"} if family_of(name) == "ban" else {}  # frozen ViTs up to 300 M: shapes only
    model = changekit.build_model(name, **kw)
    assert model.changekit_spec["arch"] == name
    assert isinstance(model, ChangekitModel) and "forward" not in vars(type(model))  # the base owns forward
    assert (model.task, model.num_dates) in (("change", 2), ("segmentation", 1))
    assert isinstance(model.num_classes, int) and isinstance(model.in_channels, int)
    counts = parameter_counts(model)
    assert 0 < counts["params_trainable"] <= counts["params_total"]
    if name in PUBLISHED_TOTALS:
        assert counts["params_total"] == PUBLISHED_TOTALS[name]


@pytest.mark.parametrize("name", ["fc_siam_diff", "bit_r18", "changeformer_mit-b0"])
def test_changekit_info_reports_the_same_counts(name):
    info = model_info(name, (64, 64))
    counts = parameter_counts(changekit.build_model(name))
    assert (info["params_total"], info["params_trainable"]) == (counts["params_total"], counts["params_trainable"])
    assert info["flops"] > 0 and sum(m["params"] for m in info["modules"].values()) == counts["params_total"]


@pytest.mark.parametrize("name", MODELS)
def test_tiny_forward_shapes_and_strict_round_trip(name):
    torch.manual_seed(0)
    model = tiny_model(name).eval()
    c, k = model.in_channels, model.num_classes
    xs = [torch.randn(1, c, 64, 64) for _ in range(model.num_dates)]
    with torch.no_grad():
        out = model(*xs)
        wide = model(*[torch.randn(1, c, 64, 96) for _ in range(model.num_dates)])
    assert out.shape == (1, k, 64, 64) and wide.shape == (1, k, 64, 96)
    assert torch.isfinite(out).all() and torch.isfinite(wide).all()
    fresh = copy.deepcopy(model)  # same constructor, so same keys: zero it, then every value must come back
    for v in fresh.state_dict().values():
        v.zero_()
    changekit.load_weights(fresh, model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(*xs), out)


NHWC_FAMILIES = {"fc_siam", "unet", "bit", "mcat_unet"}  # benchmarks/channels_last.py: faster; DSQNet is slower


@pytest.mark.parametrize("name", [n for n in MODELS if family_of(n) in NHWC_FAMILIES])
def test_channels_last_inference_gives_the_same_logits(name):
    """A family that declares ``inference_channels_last`` runs NHWC under optimize_for_inference: weights and
    images converted, the same logits to fp32 rounding, returned contiguous (NCHW)."""
    torch.manual_seed(0)
    model = tiny_model(name).eval()
    xs = [torch.randn(2, model.in_channels, 64, 96) for _ in range(model.num_dates)]
    with torch.no_grad():
        ref = model(*xs)
    fast = changekit.optimize_for_inference(model, "fp32")
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert fast.channels_last and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    out = fast(*xs)
    assert out.is_contiguous() and torch.allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_channels_last_is_declared_by_the_families_measured_faster():
    first: dict[str, str] = {}
    for name in MODELS:
        first.setdefault(family_of(name), name)
    assert {f for f, n in first.items() if tiny_model(n).inference_channels_last} == NHWC_FAMILIES
    assert not changekit.optimize_for_inference(tiny_model("changeformer_mit-b0"), "fp32").channels_last


# ---------------------------------------------------------------------------------------------- configs
def test_configs_are_found():
    assert len(CONFIGS) >= 45


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_parses_and_builds(path):
    from changekit.data.presets import get_preset

    cfg = load_config(path)
    parser = _parser(cfg.get("task", "change"))
    parser.parse_object({k: cfg[k] for k in ("model", "data", "trainer") if k in cfg})  # raises on a bad key or type

    m = cfg["model"]
    get_preset(cfg["data"]["dataset"])
    spec = json.dumps([m["arch"], without_weights(m.get("arch_args") or {}), m.get("num_classes", 2)], sort_keys=True)
    assert _build_once(spec) == m.get("num_classes", 2)


@functools.cache
def _parser(task: str):
    """The model / data / trainer sections of LightningCLI's parser for ``task``."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch import Trainer

    from changekit.engine.datamodule import ChangeDataModule
    from changekit.engine.lightning_cli import TASKS

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(TASKS[task], "model")
    parser.add_class_arguments(ChangeDataModule, "data")
    parser.add_class_arguments(Trainer, "trainer", skip={"callbacks", "logger", "plugins", "strategy"})
    return parser


@functools.cache
def _build_once(spec: str) -> int:
    """Build a config's model once per distinct (arch, arch_args, num_classes); its num_classes."""
    arch, args, num_classes = json.loads(spec)
    kw = {"fm_init": "meta"} if family_of(arch) == "ban" else {}
    return changekit.build_model({"arch": arch, "arch_args": args}, num_classes=num_classes, **kw).num_classes


# ---------------------------------------------------------------------------------------------- learning
def _changed_squares(n: int = 4, size: int = 64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    t1 = torch.randn(n, 3, size, size, generator=g)
    t2 = t1 + 0.1 * torch.randn(n, 3, size, size, generator=g)
    label = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):  # a bright 20x20 square appears in each pair
        y, x = torch.randint(0, size - 20, (2,), generator=g).tolist()
        t2[i, :, y:y + 20, x:x + 20] += 2.0
        label[i, y:y + 20, x:x + 20] = 1
    return t1, t2, label


#: (model, build arguments, learning rate, steps): the small members of each family.
LEARNERS = [
    ("fc_siam_diff", {}, 2e-3, 15),
    ("bit_r18", {}, 1e-3, 15),
    ("changeformer_mit-b0", {"drop_path_rate": 0.0}, 1e-3, 12),
    ("ban", {"fm": "timm:vit_tiny_patch16_224", "bitab": "mit-b0", "fm_img_size": 32, "depth": 3}, 2e-3, 12),
    ("dsqnet_swin-t", {**TINY["dsqnet"], "backbone_args": TINY_BACKBONES["dsqnet_swin-t"]}, 2e-3, 25),
    ("dsqnet-cx_swin-t", {**TINY["dsqnet"], "backbone_args": TINY_BACKBONES["dsqnet-cx_swin-t"]}, 2e-3, 15),
    ("clipformer_swin-t_vit-b16", TINY["clipformer"], 1e-3, 12),
    ("unet_r18_early", {}, 1e-3, 12),
    ("unet_r18_siam-diff", {}, 1e-3, 12),
]


@pytest.mark.parametrize("name,kwargs,lr,steps", LEARNERS, ids=[n for n, *_ in LEARNERS])
def test_short_training_run_loss_falls(name, kwargs, lr, steps):
    torch.manual_seed(0)
    model = changekit.build_model(name, **kwargs).train()
    frozen = {k: v.clone() for k, v in model.named_parameters() if not v.requires_grad}
    if name.startswith("clipformer"):  # the 49408-row token table: keep the optimiser step cheap
        model.text_encoder.token_embedding.weight.requires_grad_(False)
    t1, t2, label = _changed_squares()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    losses = []
    for step in range(steps):
        idx = torch.arange(2) + 2 * (step % 2)
        loss = F.cross_entropy(model(t1[idx], t2[idx]), label[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.6 * first, losses
    for k, v in model.named_parameters():
        if k in frozen:
            assert torch.equal(v, frozen[k]), f"frozen parameter {k} changed"
