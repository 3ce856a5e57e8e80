"""BAN: goldens from open-cd, parameter counts, every config at 512, the frozen FM's cost contract, training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.golden import golden_state_dict, load_golden

import changekit
from changekit.config import load_config
from changekit.models.ban import BAN
from changekit.models.summary import parameter_counts

CONFIGS = sorted((Path(__file__).parents[2] / "configs" / "ban").glob("*.yaml"))
TINY_FM = dict(kind="clip", patch_size=8, img_size=32, embed_dim=64, num_heads=2, num_layers=3, out_indices=(0, 1, 2))


def _golden_model(name: str, arch: str) -> tuple[BAN, dict]:
    g = load_golden(name)
    model = changekit.build_model(arch, fm_init="empty")  # every weight comes from the checkpoint
    changekit.load_weights(model, {"state_dict": golden_state_dict(g), "meta": {"config": g["config"]}})
    return model.eval(), g


def test_golden_vit_b16_clip_mit_b0():
    model, g = _golden_model("ban_vit-b16-clip_mit-b0_256", "ban_vit-b16-clip_mit-b0")
    with torch.no_grad():
        logits = model.forward_decoder(g["t1"], g["t2"])
        full = model(g["t1"], g["t2"])
        assert logits.shape == g["logits"].shape == (1, 2, 64, 64)
        assert (logits - g["logits"]).abs().max() <= 1e-4
        assert (full - g["logits_full"]).abs().max() <= 1e-4
        # other sizes, non-square: the FM always sees 224x224, the Bi-TAB the crop as given
        for h, w in ((96, 160), (100, 140)):
            out = model(torch.randn(1, 3, h, w), torch.randn(1, 3, h, w))
            assert out.shape == (1, 2, h, w) and torch.isfinite(out).all()


@pytest.mark.slow  # full-size L/14 golden: ~11 s
def test_golden_vit_l14_clip_bit():
    model, g = _golden_model("ban_vit-l14-clip_bit_256", "ban_vit-l14-clip_bit")
    with torch.no_grad():
        logits = model.forward_decoder(g["t1"], g["t2"])
    assert logits.shape == g["logits"].shape == (1, 2, 256, 256)  # BiT head: full resolution
    assert (logits - g["logits"]).abs().max() <= 1e-4
    assert (logits - g["logits_full"]).abs().max() <= 1e-4


# open-cd's built models (ban_and_opencd.md §1.6): exact where the reference gives digits, else to 10 k params
PARAMS = {
    "ban_vit-b16-clip_mit-b0": (68_883_622, 4_349_350),
    "ban_vit-b16-clip_mit-b1": (80_301_254, 15_766_982),
    "ban_vit-l14-clip_bit": (231_734_858, 3_806_794),
    "ban_vit-l14-clip_mit-b0": (232.40e6, 4.47e6),
    "ban_vit-b16-clip_bit": (68.22e6, 3.69e6),
    "ban_vit-b32-remoteclip_mit-b0": (70.54e6, 4.35e6),
    "ban_vit-b16-in21k_mit-b0": (90.15e6, 4.35e6),
    "ban_vit-l14-clip_mit-b1": (243.94e6, 16.01e6),
    "ban_vit-b16-clip_mit-b2": (91.35e6, 26.81e6),
    "ban_vit-l14-clip_mit-b2": (254.99e6, 27.06e6),
    "ban_vit-l16-in21k_mit-b0": (307.78e6, 4.47e6),
}


@pytest.mark.parametrize("arch", sorted(PARAMS))
def test_parameter_counts(arch):
    model = changekit.build_model(arch, fm_init="meta")  # shape-only FM: counts without allocating it
    c = parameter_counts(model)
    total, trainable = c["params_total"], c["params_trainable"]
    want_total, want_trainable = PARAMS[arch]
    if isinstance(want_total, int):
        assert (total, trainable) == (want_total, want_trainable)
    else:
        assert round(total / 1e4) == round(want_total / 1e4) and round(trainable / 1e4) == round(want_trainable / 1e4)
    assert all(not p.requires_grad for p in model.image_encoder.parameters())


@pytest.mark.slow  # every released config at full size: ~15 s
def test_every_config_builds_and_runs_at_512():
    """Each configs/ban/*.yaml builds its model and runs a forward pass at 512.

    The trainable network of every configuration (Bi-TAB, bridges, decoder; once per Bi-TAB)
    runs for real at 512 on real-shaped FM features; the frozen ViTs (up to 300 M parameters) run on the meta device, which checks
    every shape without the arithmetic; their numerics are covered by the goldens and the format tests.
    """
    opencd = {p.stem + ".py" for p in CONFIGS}  # open-cd 1.1.0's configs/ban, every one by name
    assert len(CONFIGS) == 23 and {f"ban_vit-{fm}_{b}_512x512_80k_s2looking.py" for fm, b in (
        ("b16-clip", "bit"), ("b16-clip", "mit-b0"), ("b16-clip", "mit-b1"), ("l14-clip", "mit-b1"))} <= opencd
    assert {"ban_vit-b16-clip_mit-b0_256x256_100e_whucd.py", "ban_vit-l14-clip_mit-b0_256x256_100e_whucd.py"} <= opencd
    t1, t2 = torch.randn(1, 3, 512, 512), torch.randn(1, 3, 512, 512)
    seen = set()  # Bi-TABs run for real once each (the FM width only changes the bridges' input channels)
    for path in CONFIGS:
        cfg = load_config(path)
        m, d = cfg["model"], cfg["data"]
        assert Path(m["arch_args"]["fm_weights"]).name and m["grad_clip"] == 0.01
        assert d["mean"] == "clip" and cfg["trainer"]["precision"] == "16-mixed"
        if path.stem.endswith("whucd"):  # open-cd's WHU-CD recipe: 256 tiles, 100 epochs, wd 0.01, mIoU-best
            assert path.stem.startswith(m["arch"] + "_256x256_100e")
            assert d["dataset"] == "whu-cd" and d["crop_size"] == [256, 256] and m["eval"] == {"mode": "whole"}
            assert cfg["trainer"]["max_epochs"] == 100 and m["schedule"]["warmup_epochs"] == 5
            assert m["optimizer"]["weight_decay"] == 0.01 and cfg["checkpoint"]["monitor"] == "val/miou"
            continue  # the same networks as the LEVIR-CD configs of the same name, run below
        assert path.stem.startswith(m["arch"] + "_512x512_")
        assert d["crop_size"] == [512, 512]
        iters = 80000 if path.stem.endswith("s2looking") else 40000
        assert m["schedule"]["max_iters"] == cfg["trainer"]["max_steps"] == iters
        model = changekit.build_model(path, fm_weights=None, bitab_weights=None, fm_init="meta").eval()
        key = m["arch"].rsplit("_", 1)[-1]
        with torch.no_grad():
            if key not in seen:
                seen.add(key)
                f1, f2 = model.extract_fm(t1.to("meta"), t2.to("meta"))
                f1, f2 = [torch.randn(f.shape) for f in f1], [torch.randn(f.shape) for f in f2]
                logits = model.decode_head(t1, t2, f1, f2)
                assert torch.isfinite(logits).all(), path.name
                assert logits.shape[-1] == (512 if "bit" in m["arch"] else 128), path.name
            model.to("meta")
            out = model(t1.to("meta"), t2.to("meta"))
        assert out.shape == (1, 2, 512, 512)


def _tiny_ban(bitab: str = "mit-b0", **kw) -> BAN:
    return changekit.build_model("ban", fm=dict(TINY_FM), bitab=bitab, **kw)


def test_frozen_fm_one_batch_no_autograd_eval_mode():
    model = _tiny_ban().train()
    calls = []
    orig = model.image_encoder.model.forward_intermediates

    def spy(x, **kw):
        calls.append((x.shape[0], torch.is_grad_enabled()))
        return orig(x, **kw)

    model.image_encoder.model.forward_intermediates = spy
    assert not model.image_encoder.model.training and model.decode_head.training
    t1, t2 = torch.randn(3, 3, 64, 96), torch.randn(3, 3, 64, 96)
    out = model(t1, t2)
    assert calls == [(6, False)]  # both dates as one batch, no graph through the FM
    out.sum().backward()
    assert all(p.grad is None for p in model.image_encoder.parameters())
    assert model.image_encoder.model.patch_embed.proj.weight.requires_grad is False


def test_bit_bitab_any_size():
    model = _tiny_ban("bit").eval()
    with torch.no_grad():
        for h, w in ((64, 96), (72, 100)):
            assert model(torch.randn(1, 3, h, w), torch.randn(1, 3, h, w)).shape == (1, 2, h, w)


def _saved_bytes_and_grads(model: BAN, t1: torch.Tensor, t2: torch.Tensor):
    seen: dict[int, int] = {}

    def pack(t):
        if not isinstance(t, torch.nn.Parameter):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    torch.manual_seed(1)  # same dropout / drop-path draws in every variant
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(t1, t2)
    out.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return sum(seen.values()), out.detach(), grads


@pytest.mark.parametrize("bitab", ["mit-b0", "bit"])
def test_recompute_and_checkpointing_keep_outputs_and_gradients_and_save_memory(bitab):
    """Selective recompute (default) and checkpoint_bitab=True give the fp32 outputs and gradients of plain
    autograd while keeping fewer activations for backward."""
    torch.manual_seed(0)
    plain = _tiny_ban(bitab).train()
    for m in plain.modules():
        if hasattr(m, "hidden") or type(m).__name__ == "MixFFN":
            m.recompute = False
    selective = _tiny_ban(bitab).train()
    full = _tiny_ban(bitab, checkpoint_bitab=True).train()
    for m in (selective, full):
        m.load_state_dict(plain.state_dict())
    t1, t2 = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    runs = [_saved_bytes_and_grads(m, t1, t2) for m in (plain, selective, full)]
    for _saved, out, grads in runs[1:]:
        assert torch.allclose(out, runs[0][1], atol=1e-6)
        assert grads.keys() == runs[0][2].keys()
        assert all(torch.allclose(grads[k], runs[0][2][k], atol=1e-6) for k in grads)
    if bitab.startswith("mit"):
        assert runs[1][0] < runs[0][0]  # dw conv + GELU outputs not kept
    assert runs[2][0] < 0.7 * runs[1][0]  # the Bi-TAB keeps only its stage inputs


def test_fm_feature_cache(tmp_path):
    model = changekit.build_model("ban", fm=dict(TINY_FM), bitab="mit-b0", fm_cache_dir=tmp_path).eval()
    t1, t2 = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = model(t1, t2)
        files = sorted(tmp_path.rglob("*.pt"))
        assert len(files) == 4  # one per image and date
        b = model(t1, t2)
        assert sorted(tmp_path.rglob("*.pt")) == files
    assert torch.equal(a, b)
    model.train()
    model(torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64))
    assert len(list(tmp_path.rglob("*.pt"))) == 4  # training never caches


def test_timm_foundation_model_by_name():
    """A non-CLIP timm model (DINOv2 with registers, reduced depth, random init) as BAN's FM."""
    model = changekit.build_model("ban", fm="timm:vit_small_patch14_reg4_dinov2", bitab="mit-b0", fm_img_size=56,
                                  depth=4).eval()
    fm = model.image_encoder
    assert fm.out_indices == (0, 2, 3) and len(fm.model.blocks) == 4  # last block of each third
    with torch.no_grad():
        feats = fm(torch.randn(2, 3, 64, 80))
        assert [tuple(f.shape) for f in feats] == [(2, 384, 4, 4)] * 3  # register + CLS tokens dropped
        assert model(torch.randn(1, 3, 64, 80), torch.randn(1, 3, 64, 80)).shape == (1, 2, 64, 80)
    assert parameter_counts(model)["params_trainable"] == parameter_counts(model.decode_head)["params_total"]




def test_bf16_inference_agrees_with_fp32_on_the_golden_inputs():
    model, g = _golden_model("ban_vit-b16-clip_mit-b0_256", "ban_vit-b16-clip_mit-b0")
    with torch.inference_mode():
        ref = model(g["t1"], g["t2"])
    fast = changekit.optimize_for_inference(model, precision="bf16")
    out = fast(g["t1"], g["t2"])
    from changekit.deploy.optimize import cpu_has_native_bf16

    assert fast.precision == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert out.dtype == torch.float32 and (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.999
    with pytest.raises(changekit.errors.ConfigError, match="precision 'int4'"):
        changekit.optimize_for_inference(model, precision="int4")


@pytest.mark.parametrize("engine", ["x86", "onednn"])
def test_int8_inference_agrees_with_fp32_on_the_golden_inputs(engine, monkeypatch):
    """int8: the frozen ViT's attention and MLP projections become dynamic int8 layers (the Bi-TAB's and decoder's
    small layers, norms and convolutions stay fp32); argmax agreement with fp32 >= 99.5 %, with either engine's
    kernels (fbgemm where the CPU has no AMX, oneDNN where it has)."""
    monkeypatch.setenv("CHANGEKIT_INT8_ENGINE", engine)
    model, g = _golden_model("ban_vit-b16-clip_mit-b0_256", "ban_vit-b16-clip_mit-b0")
    with torch.inference_mode():
        ref = model(g["t1"], g["t2"])
    blocks = len(model.image_encoder.model.blocks)
    engine_before = torch.backends.quantized.engine
    fast = changekit.optimize_for_inference(model, precision="int8")
    quantized = [n for n, m in model.named_modules() if type(m).__name__ == "Linear" and "quantized" in type(m).__module__]
    assert fast.precision == "int8" and len(quantized) == 4 * blocks  # qkv, proj, fc1, fc2 of every block
    assert all(n.startswith("image_encoder.") for n in quantized)
    assert torch.backends.quantized.engine == engine_before  # only the packing used the chosen engine
    out = fast(g["t1"], g["t2"])
    assert out.dtype == torch.float32 and (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.995


def test_int8_engine_is_onednn_only_where_onednn_may_use_amx(monkeypatch):
    from changekit.deploy.optimize import int8_engine

    monkeypatch.delenv("CHANGEKIT_INT8_ENGINE", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert int8_engine() == "onednn"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN capped below AMX: fbgemm's kernels are faster
    assert int8_engine() == "x86"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_amx")
    assert int8_engine() == "onednn"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert int8_engine() == "x86"
    monkeypatch.setenv("CHANGEKIT_INT8_ENGINE", "onednn")
    assert int8_engine() == "onednn"
    monkeypatch.setenv("CHANGEKIT_INT8_ENGINE", "qnnpack2")
    with pytest.raises(changekit.errors.ConfigError, match="CHANGEKIT_INT8_ENGINE=qnnpack2.*use one of"):
        int8_engine()


@pytest.mark.parametrize("native_bf16,want", [("1", "bf16"), ("0", "int8")])
def test_auto_precision_is_bf16_where_native_else_int8_for_ban(native_bf16, want, monkeypatch):
    monkeypatch.setenv("CHANGEKIT_CPU_BF16", native_bf16)
    from changekit.deploy.optimize import auto_precision, int8_engine

    tiny = changekit.build_model("ban", fm=dict(TINY_FM), bitab="mit-b0")
    precision, why = auto_precision(tiny, "cpu")
    assert precision == want and ("natively" in why if want == "bf16" else "int8 linear layers validated" in why)
    assert want == "bf16" or why.endswith(f"({int8_engine()} kernels)")  # which kernels run is recorded too
    plain = changekit.build_model("bit_r18")  # a family with no reduced precision validated: fp32
    assert auto_precision(plain, "cpu")[0] == "fp32"
    assert changekit.optimize_for_inference(plain, precision="auto").precision_reason.startswith("BiT has no")
