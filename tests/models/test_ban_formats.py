"""BAN foundation-model weights in each official format: small checkpoints with the real key names and layouts.

Each test writes a reduced-size file the way its ecosystem does (OpenAI TorchScript archive, open_clip state
dict as .bin / .safetensors, BAN's pre-converted open-cd .pth, timm .safetensors, Google JAX .npz), loads it
into a :class:`FrozenViT` and proves that every key landed: the FM's features equal the source model's own
residual stream, and the report lists exactly the keys the FM does not use.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import changekit
from changekit.checkpoints import CheckpointError
from changekit.models.foundation import vit_fm
from changekit.models.foundation.loaders import load_fm_weights, resize_pos_embed, timm_to_opencd_vit

W, P, IMG, HEADS = 64, 8, 32, 2


@pytest.fixture(scope="module")
def tiny_clip():
    """A tiny open_clip CLIP (QuickGELU, 3 vision blocks) and its visual residual stream after each block."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    clip = CLIP(embed_dim=32, vision_cfg=CLIPVisionCfg(layers=3, width=W, patch_size=P, image_size=IMG, head_width=W // HEADS),
                text_cfg=CLIPTextCfg(context_length=8, vocab_size=64, width=32, heads=2, layers=1), quick_gelu=True).eval()
    with torch.no_grad():  # non-trivial norms and biases so that a misplaced key shows
        for p in clip.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 3, IMG, IMG)
    stream = []
    hooks = [b.register_forward_hook(lambda m, i, o: stream.append(o)) for b in clip.visual.transformer.resblocks]
    with torch.no_grad():
        clip.visual(x)
    for h in hooks:
        h.remove()
    g = IMG // P
    feats = [s[:, 1:].transpose(1, 2).reshape(2, W, g, g) for s in stream]  # batch-first in open_clip >= 2.2x
    return clip, x, feats


def _clip_fm(num_layers=2, out=(0, 1)):
    return vit_fm("clip", patch_size=P, img_size=IMG, embed_dim=W, num_heads=HEADS, num_layers=num_layers, out_indices=out)


def _check_clip(fm, report, x, feats, fmt):
    assert report["format"] == fmt
    assert set(report["loaded"]) == set(fm.model.state_dict())
    ignored = set(report["ignored"])
    assert any(k.endswith("resblocks.2.ln_1.weight") for k in ignored)  # block beyond the truncation
    assert {"visual.ln_post.weight", "visual.proj", "token_embedding.weight"} <= ignored or fmt == "opencd"
    with torch.no_grad():
        got = fm(x)
    for a, b in zip(got, feats[:2]):
        assert torch.allclose(a, b, atol=1e-5)


def test_openai_torchscript_archive(tiny_clip, tmp_path):
    clip, x, feats = tiny_clip
    traced = torch.jit.trace(clip, (torch.randn(1, 3, IMG, IMG), torch.zeros(1, 8, dtype=torch.long)), strict=False,
                            check_trace=False)
    path = tmp_path / "ViT-T-8.pt"
    traced.save(str(path))
    fm = _clip_fm()
    _check_clip(fm, load_fm_weights(fm, path), x, feats, "clip")


@pytest.mark.parametrize("suffix", [".bin", ".safetensors", ".pt"])
def test_open_clip_state_dict(tiny_clip, tmp_path, suffix):
    clip, x, feats = tiny_clip
    path = tmp_path / f"open_clip_model{suffix}"
    sd = {k: v.contiguous() for k, v in clip.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd, path)  # RemoteCLIP's RemoteCLIP-ViT-B-32.pt is such a plain open_clip state dict
    fm = _clip_fm()
    _check_clip(fm, load_fm_weights(fm, path), x, feats, "clip")


def test_opencd_pretrain_file_and_pos_embed_resize(tiny_clip, tmp_path):
    clip, x, feats = tiny_clip
    src = _clip_fm(num_layers=3, out=(0, 1, 2))
    load_fm_weights(src, {k: v for k, v in clip.state_dict().items()})
    # BAN's pretrain/clip_vit-*.pth: clip2opencd.py keys, image_encoder.-prefixed, plus the SAN-style rest
    sd = {f"image_encoder.{k}": v for k, v in timm_to_opencd_vit(src.model.state_dict()).items()}
    sd["decode_head.rec_with_attnbias.resblocks.0.ln_1.weight"] = torch.ones(W)
    path = tmp_path / "clip_vit-tiny_3rdparty.pth"
    torch.save({"state_dict": sd, "meta": {"note": "converted"}}, path)
    fm = _clip_fm()
    report = load_fm_weights(fm, path)
    assert report["format"] == "opencd" and set(report["loaded"]) == set(fm.model.state_dict())
    assert "decode_head.rec_with_attnbias.resblocks.0.ln_1.weight" in report["ignored"]
    with torch.no_grad():
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(fm(x), feats))
    # a different FM grid: the position embedding is resized bicubically on the grid, CLS slot kept
    big = vit_fm("clip", patch_size=P, img_size=48, embed_dim=W, num_heads=HEADS, num_layers=2, out_indices=(0, 1))
    load_fm_weights(big, path)
    pos = src.model.pos_embed
    grid = pos[:, 1:].reshape(1, 4, 4, W).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
    assert torch.allclose(big.model.pos_embed[:, 1:], want, atol=1e-6)
    assert torch.equal(big.model.pos_embed[:, :1], pos[:, :1])
    assert torch.equal(resize_pos_embed(pos, (4, 4)), pos)


@pytest.fixture(scope="module")
def tiny_augreg():
    """A timm ViT laid out like AugReg IN-21k (GELU, eps 1e-6, patch bias, final norm, head)."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(1)
    ref = VisionTransformer(img_size=IMG, patch_size=P, embed_dim=W, depth=3, num_heads=HEADS, num_classes=5).eval()
    with torch.no_grad():
        for p in ref.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return ref


def _in21k_fm():
    return vit_fm("in21k", patch_size=P, img_size=IMG, embed_dim=W, num_heads=HEADS, num_layers=3, out_indices=(0, 1, 2))


def _check_in21k(fm, report, ref):
    assert set(report["loaded"]) == set(fm.model.state_dict())
    # the IN-21k quirk: the final encoder norm is loaded into ln_pre (timm norm_pre)
    assert torch.equal(fm.model.norm_pre.weight, ref.norm.weight) and torch.equal(fm.model.norm_pre.bias, ref.norm.bias)
    assert torch.equal(fm.model.patch_embed.proj.bias, ref.patch_embed.proj.bias)
    want_model = ref
    want_model.norm_pre = ref.norm
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        want = want_model.forward_intermediates(x, indices=[0, 1, 2], norm=False, intermediates_only=True)
        got = fm(x)
    want_model.norm_pre = torch.nn.Identity()
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-5)


def test_timm_safetensors(tiny_augreg, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_augreg.state_dict().items()}, str(path))
    fm = _in21k_fm()
    report = load_fm_weights(fm, path)
    assert report["format"] == "timm" and sorted(report["ignored"]) == ["head.bias", "head.weight"]
    _check_in21k(fm, report, tiny_augreg)


def _write_jax_npz(ref, path):
    """The Google AugReg .npz key names and array layouts (the inverse of timm's _load_weights)."""
    c, h = W, HEADS
    w = {"embedding/kernel": ref.patch_embed.proj.weight.permute(2, 3, 1, 0), "embedding/bias": ref.patch_embed.proj.bias,
         "cls": ref.cls_token, "Transformer/posembed_input/pos_embedding": ref.pos_embed,
         "Transformer/encoder_norm/scale": ref.norm.weight, "Transformer/encoder_norm/bias": ref.norm.bias,
         "head/kernel": ref.head.weight.T, "head/bias": ref.head.bias,
         "pre_logits/kernel": torch.zeros(c, c), "pre_logits/bias": torch.zeros(c)}
    for i, b in enumerate(ref.blocks):
        p = f"Transformer/encoderblock_{i}/"
        w[p + "LayerNorm_0/scale"], w[p + "LayerNorm_0/bias"] = b.norm1.weight, b.norm1.bias
        w[p + "LayerNorm_2/scale"], w[p + "LayerNorm_2/bias"] = b.norm2.weight, b.norm2.bias
        for j, n in enumerate(("query", "key", "value")):
            w[p + f"MultiHeadDotProductAttention_1/{n}/kernel"] = b.attn.qkv.weight[j * c:(j + 1) * c].T.reshape(c, h, c // h)
            w[p + f"MultiHeadDotProductAttention_1/{n}/bias"] = b.attn.qkv.bias[j * c:(j + 1) * c].reshape(h, c // h)
        w[p + "MultiHeadDotProductAttention_1/out/kernel"] = b.attn.proj.weight.reshape(c, h, c // h).permute(1, 2, 0)
        w[p + "MultiHeadDotProductAttention_1/out/bias"] = b.attn.proj.bias
        w[p + "MlpBlock_3/Dense_0/kernel"], w[p + "MlpBlock_3/Dense_0/bias"] = b.mlp.fc1.weight.T, b.mlp.fc1.bias
        w[p + "MlpBlock_3/Dense_1/kernel"], w[p + "MlpBlock_3/Dense_1/bias"] = b.mlp.fc2.weight.T, b.mlp.fc2.bias
    np.savez(path, **{k: v.detach().numpy() for k, v in w.items()})


def test_jax_npz(tiny_augreg, tmp_path):
    path = tmp_path / "augreg_T_8-i21k.npz"
    _write_jax_npz(tiny_augreg, path)
    fm = _in21k_fm()
    report = load_fm_weights(fm, path)
    assert report["format"] == "jax-npz"
    assert sorted(report["ignored"]) == ["head/bias", "head/kernel", "pre_logits/bias", "pre_logits/kernel"]
    _check_in21k(fm, report, tiny_augreg)


def test_missing_or_misshaped_weights_are_reported(tiny_clip, tmp_path):
    clip, _, _ = tiny_clip
    sd = dict(clip.state_dict())
    del sd["visual.transformer.resblocks.1.mlp.c_fc.bias"]
    with pytest.raises(CheckpointError, match="missing.*blocks.1.mlp.fc1.bias"):
        load_fm_weights(_clip_fm(), sd)
    wide = vit_fm("clip", patch_size=P, img_size=IMG, embed_dim=2 * W, num_heads=HEADS, num_layers=2, out_indices=(0, 1))
    with pytest.raises(CheckpointError, match="shape"):
        load_fm_weights(wide, dict(clip.state_dict()))


def test_ban_checkpoint_roundtrip_and_fm_weights_argument(tiny_clip, tmp_path):
    clip, x, feats = tiny_clip
    path = tmp_path / "clip.bin"
    torch.save(clip.state_dict(), path)
    spec = dict(kind="clip", patch_size=P, img_size=IMG, embed_dim=W, num_heads=HEADS, num_layers=3, out_indices=(0, 1, 2))
    model = changekit.build_model("ban", fm=spec, bitab="mit-b0", fm_weights=path).eval()
    with torch.no_grad():
        assert torch.allclose(model.image_encoder(x)[0], feats[0], atol=1e-5)
    ckpt = tmp_path / "ban.pth"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    again = changekit.build_model("ban", fm=spec, bitab="mit-b0", weights=ckpt).eval()
    t1, t2 = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(t1, t2), again(t1, t2))
    # the same weights in open-cd's layout (image_encoder.layers.*, decode_head.* unchanged) load strictly too
    opencd = {f"image_encoder.{k}": v for k, v in timm_to_opencd_vit(model.image_encoder.model.state_dict()).items()}
    opencd.update({k: v for k, v in model.state_dict().items() if k.startswith("decode_head.")})
    third = changekit.build_model("ban", fm=spec, bitab="mit-b0", fm_init="empty")
    changekit.load_weights(third, {"state_dict": opencd})
    with torch.no_grad():
        assert torch.equal(model(t1, t2), third.eval()(t1, t2))
