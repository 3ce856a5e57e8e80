"""CLIPFormer: shapes at 256/512 with per-sample prompts, context insertion, weight files, CLIP labelling, learning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.clip_toy import TINY, tiny_open_clip

from changekit.config import load_config
from changekit.models.clipformer import (
    BACKGROUND_PROMPT,
    FALLBACK_CLASSES,
    RS_CLASSES_56,
    CLIPFormer,
    build_prompts,
)
from changekit.models.text.clip_text import (
    CLIPTextContextEncoder,
    load_clip_text_weights,
    sot_eot_ids,
    tokenize,
)


# --------------------------------------------------------------------------------------------- size
def test_full_size_parameter_breakdown():
    m = CLIPFormer()
    n = {name: sum(p.numel() for p in c.parameters()) for name, c in m.named_children()}
    assert n == {
        "backbone": 27_520_698,
        "glpool": 393_216,
        "text_encoder": 63_428_096,
        "context_decoder": 3_553_024,
        "neck": 3_099_648,
        "minus_conv": 370_176,
        "diff": 10_403_584,
        "channel_att": 1_085_632,
        "decode_head": 4_999_426,
    }
    assert m.contexts.shape == (1, 13, 512) and m.gamma.shape == (512,)
    assert sum(p.numel() for p in m.parameters()) == 114_860_668
    assert all(p.requires_grad for p in m.parameters())


# --------------------------------------------------------------------------------------------- text
def test_tokenize_keeps_sot_eot_and_truncates():
    sot, eot = sot_eot_ids()
    short = tokenize(build_prompts(["building"])[1], 64)[0]
    n = int((short != 0).sum())
    assert short[0] == sot and short[n - 1] == eot and (short[n:] == 0).all()
    assert short.argmax() == n - 1  # EOT is the largest id: argmax finds it
    # all 56 classes do not fit in 64 tokens: truncated, the last position forced to EOT (one EOT only)
    long = tokenize(build_prompts(list(RS_CLASSES_56))[1], 64)[0]
    assert long[0] == sot and long[-1] == eot and (long == eot).sum() == 1 and (long != 0).all()
    assert long.argmax() == 63


def test_context_tokens_sit_after_sot_and_eot_feature_is_pooled():
    enc = CLIPTextContextEncoder(width=64, heads=1, layers=1, embed_dim=32).eval()
    ctx = torch.randn(1, 13, 64)
    prompts = [BACKGROUND_PROMPT, build_prompts(["building", "road"])[1], build_prompts(list(RS_CLASSES_56))[1]]
    tokens = tokenize(prompts, 64)
    seen = {}
    enc.transformer.register_forward_hook(lambda mod, args, out: seen.update(x=args[0]))
    enc.ln_final.register_forward_hook(lambda mod, args, out: seen.update(y=out))
    with torch.no_grad():
        out = enc(tokens, ctx)
    x = seen["x"] - enc.positional_embedding  # (3, 77, 64) embeddings before position
    tok = enc.token_embedding.weight
    _, eot = sot_eot_ids()
    assert x.shape == (3, 77, 64)
    torch.testing.assert_close(x[:, 0], tok[tokens[:, 0]])  # SOT stays first
    torch.testing.assert_close(x[:, 1:14], ctx.expand(3, -1, -1))  # 13 context tokens right after SOT
    torch.testing.assert_close(x[:, 14:], tok[tokens[:, 1:]])  # then the words, EOT, padding
    idx = enc.eot_index(tokens, 13)
    assert idx.tolist() == [int((t != 0).sum()) - 1 + 13 for t in tokens]
    torch.testing.assert_close(x[torch.arange(3), idx], tok[eot].expand(3, -1))  # the pooled position holds EOT
    torch.testing.assert_close(out, seen["y"][torch.arange(3), idx] @ enc.text_projection)
    with pytest.raises(ValueError, match="context length"):
        enc(tokenize(prompts, 60), ctx)


def test_text_tower_from_open_clip_state_dict_and_torchscript(tmp_path):
    from safetensors.torch import save_file

    clip = tiny_open_clip()
    sd = clip.state_dict()
    tokens = tokenize(["remote sensing image foreground objects, building"], 77)
    with torch.no_grad():
        ref = clip.encode_text(tokens)

    # open_clip state dict (.pt and .safetensors): every text key lands; image keys are reported as ignored
    torch.save(sd, tmp_path / "tiny_open_clip.pt")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "tiny_open_clip.safetensors"))
    for name in ("tiny_open_clip.pt", "tiny_open_clip.safetensors"):
        enc = CLIPTextContextEncoder(width=64, heads=1, layers=2, embed_dim=32).eval()
        report = load_clip_text_weights(enc, tmp_path / name)
        assert sorted(report["loaded"]) == sorted(enc.state_dict())
        assert all(k.startswith("visual.") or k in {"logit_scale"} for k in report["ignored"])
        for k, v in enc.state_dict().items():
            torch.testing.assert_close(v, sd[k], rtol=0, atol=0)
        with torch.no_grad():
            torch.testing.assert_close(enc(tokens), ref, rtol=1e-5, atol=1e-5)  # same text features as open_clip

    # OpenAI layout in a TorchScript archive (how ViT-B-16.pt ships), half precision as OpenAI stores it
    class Holder(torch.nn.Module):
        def __init__(self, text: CLIPTextContextEncoder, visual: torch.nn.Module) -> None:
            super().__init__()
            self.visual = visual
            self.transformer = text.transformer
            self.token_embedding = text.token_embedding
            self.positional_embedding = text.positional_embedding
            self.ln_final = text.ln_final
            self.text_projection = text.text_projection
            self.logit_scale = torch.nn.Parameter(torch.tensor(4.6))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.positional_embedding.sum()

    src = CLIPTextContextEncoder(width=64, heads=1, layers=2, embed_dim=32)
    holder = torch.jit.trace(Holder(src, torch.nn.Linear(4, 4)).half(), torch.zeros(1, dtype=torch.half))
    holder.save(str(tmp_path / "ViT-tiny.pt"))
    enc = CLIPTextContextEncoder(width=64, heads=1, layers=2, embed_dim=32)
    report = load_clip_text_weights(enc, tmp_path / "ViT-tiny.pt")
    assert sorted(report["loaded"]) == sorted(enc.state_dict())
    for k, v in enc.state_dict().items():
        assert v.dtype == torch.float32
        torch.testing.assert_close(v, src.state_dict()[k].half().float(), rtol=0, atol=0)

    # through the registry: the factory loads the text tower and refuses missing files
    from changekit import build_model
    from changekit.checkpoints import CheckpointError

    small = {**TINY, "text": dict(width=64, heads=1, layers=2, embed_dim=32)}
    m = build_model({"arch": "clipformer_swin-t_vit-b16", "arch_args": {**small, "clip_weights": str(tmp_path / "ViT-tiny.pt")}})
    torch.testing.assert_close(m.text_encoder.text_projection, src.text_projection.detach().half().float())
    # Swin ImageNet weights in the official layout ({"model": ...} with the classifier and final norm)
    from changekit.models.backbones.swin import SwinTransformer

    swin = SwinTransformer(**TINY["backbone"])
    official = {k: v for k, v in swin.state_dict().items() if not k.startswith("norm")}
    official.update({"norm.weight": torch.ones(128), "norm.bias": torch.zeros(128), "head.weight": torch.zeros(5, 128), "head.bias": torch.zeros(5)})
    torch.save({"model": official}, tmp_path / "swin_tiny_test.pth")
    m = build_model("clipformer_swin-t_vit-b16", backbone_weights=str(tmp_path / "swin_tiny_test.pth"), **TINY)
    for k, v in official.items():
        if k in m.backbone.state_dict():
            torch.testing.assert_close(m.backbone.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="no such file"):
        build_model("clipformer_swin-t_vit-b16", clip_weights=str(tmp_path / "missing.pt"), **TINY)
    with pytest.raises(CheckpointError, match="does not fit"):  # wrong width: names the mismatch
        load_clip_text_weights(CLIPTextContextEncoder(width=128, heads=2, layers=2, embed_dim=32), tmp_path / "ViT-tiny.pt")


# --------------------------------------------------------------------------------------------- model
@pytest.mark.parametrize("size", [256, 512])
def test_forward_shapes_with_per_sample_prompts(size):
    m = CLIPFormer(**TINY).eval()
    assert torch.allclose(m.gamma, torch.full((32,), 1e-4))
    seen = []
    orig = m.encode_prompts
    m.encode_prompts = lambda a, b: seen.append((a, b)) or orig(a, b)
    batch = 2 if size == 256 else 1
    t1, t2 = torch.randn(batch, 3, size, size), torch.randn(batch, 3, size, size)
    classes_a = [["building"], list(RS_CLASSES_56)][:batch]  # prompts of different lengths (the second is truncated)
    classes_b = [["road", "tree", "farmland"], ["bare land"]][:batch]
    with torch.no_grad():
        if size == 512:
            half = m.forward_decoder(t1, t2, classes_a, classes_b)
            assert half.shape == (1, 2, 256, 256) and torch.isfinite(half).all()
            return
        out = m(t1, t2, classes_a, classes_b)
        s1, s2 = t1[..., :64, :64], t2[..., :64, :64]  # behaviour checks on a smaller crop
        default = m(s1, s2)  # no text given: no class names, as the released code without a class file
        other = m(s1, s2, classes_a, [["cabin"], ["sea"]])
        same = m(s1, s2, classes_a, classes_b)
        odd = m(t1[:1, :, :100, :132], t2[:1, :, :100, :132])  # not a multiple of 32
    assert out.shape == (2, 2, 256, 256) and torch.isfinite(out).all()
    a, b = seen[0]
    assert a[1][1].endswith("cabin") and b[0] == (BACKGROUND_PROMPT, "remote sensing image foreground objects, road, tree, farmland")
    assert b[1][1].endswith(", bare land")  # date B uses its own list (the released code used A's at test time)
    empty = (BACKGROUND_PROMPT, "remote sensing image foreground objects")  # ', '.join([prompt] + [])
    assert seen[1][0][0] == build_prompts(None) == build_prompts([]) == empty == seen[1][1][1]
    assert seen[2][1][0][1].endswith("cabin")
    assert default.shape == same.shape == (2, 2, 64, 64) and not torch.allclose(other, same)  # B's classes reach the output
    assert odd.shape == (1, 2, 100, 132)


# --------------------------------------------------------------------------------------------- clip-labels
def _image_folders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "ds"
    for split in ("train", "test"):
        for d in ("A", "B"):
            (root / split / d).mkdir(parents=True)
            for i in range(3):
                arr = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
                Image.fromarray(arr).save(root / split / d / f"{split}_{i}.png")
    return root


def test_clip_labels_end_to_end_with_tiny_clip(tmp_path, capsys):
    from changekit.cli import main as cli
    from changekit.data.text_classes import read_clip_classes

    root = _image_folders(tmp_path)
    clip = tiny_open_clip(text_layers=1)
    torch.save(clip.state_dict(), tmp_path / "tiny_clip.pt")
    assert cli(["clip-labels", str(root), "--clip-weights", str(tmp_path / "tiny_clip.pt"), "--batch-size", "2"]) == 0
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*_clipcls.json"))
    assert files == ["test/A_clipcls.json", "test/B_clipcls.json", "train/A_clipcls.json", "train/B_clipcls.json"]
    data = json.loads((root / "train/A_clipcls.json").read_text())
    assert data["vocabulary"] == list(RS_CLASSES_56) and set(data["images"]) == {"train_0", "train_1", "train_2"}
    ranking = data["images"]["train_0"]
    probs = [p for _, p in ranking]
    assert sorted(c for c, _ in ranking) == sorted(RS_CLASSES_56) and probs == sorted(probs, reverse=True)
    assert abs(sum(probs) - 1.0) < 1e-3 and "image_path" not in dict(ranking)

    # the probabilities are CLIP's: recompute one image by hand with open_clip
    from PIL import Image

    from changekit.models.text.zero_shot import ClipZeroShot

    zs = ClipZeroShot(clip, RS_CLASSES_56)
    img = zs.preprocess(np.asarray(Image.open(root / "train/A/train_0.png"), dtype=np.float32))[None]
    with torch.no_grad():
        logits_per_image = clip.logit_scale.exp() * F.normalize(clip.encode_image(img), dim=-1) @ F.normalize(
            clip.encode_text(tokenize(list(RS_CLASSES_56), 77)), dim=-1
        ).T
    best = logits_per_image.softmax(-1)[0]
    assert ranking[0][0] == RS_CLASSES_56[int(best.argmax())] and abs(ranking[0][1] - float(best.max())) < 1e-4

    # cached: a second run reuses the files; the class lists feed the model's prompts
    assert cli(["clip-labels", str(root / "train/A"), "--clip-weights", str(tmp_path / "tiny_clip.pt")]) == 0
    assert "up to date" in capsys.readouterr().err
    classes = read_clip_classes(root / "train/A", top_k=5)
    assert len(classes["train_1"]) == 5
    m = CLIPFormer(**TINY).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32), [classes["train_1"]],
                [read_clip_classes(root / "train/B_clipcls.json")["train_1"]])
    assert out.shape == (1, 2, 32, 32)


def test_clip_labels_fallback_and_errors(tmp_path, capsys):
    from changekit.cli import main as cli
    from changekit.data.text_classes import read_clip_classes

    root = _image_folders(tmp_path)
    out = tmp_path / "a.json"
    assert cli(["clip-labels", str(root / "train/A"), "--fallback", "--out", str(out)]) == 0
    assert read_clip_classes(out) == {f"train_{i}": list(FALLBACK_CLASSES) for i in range(3)}
    assert cli(["clip-labels", str(root), "--clip-weights", str(tmp_path / "ViT-B-16.pt")]) == 2
    assert "--fallback" in capsys.readouterr().err
    assert cli(["clip-labels", str(tmp_path / "nowhere"), "--fallback"]) == 2
    (tmp_path / "text_only.pt").write_bytes(b"")
    torch.save({"token_embedding.weight": torch.zeros(3, 3)}, tmp_path / "text_only.pt")
    assert cli(["clip-labels", str(root / "train/A"), "--clip-weights", str(tmp_path / "text_only.pt")]) == 2
    assert "not a full CLIP checkpoint" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- configs
def test_configs_follow_the_logged_recipe():
    from pathlib import Path

    from changekit.engine.change_task import ChangeDetectionTask

    files = sorted(Path(__file__).parents[2].glob("configs/clipformer/*.yaml"))
    assert [f.stem.rsplit("_", 1)[1] for f in files] == ["cdd", "levircd", "levircdplus", "sysucd", "whucd"]
    cfgs = [load_config(f) for f in files]
    for c in cfgs:
        assert c["model"] == cfgs[0]["model"]  # one recipe, only the data differ (as in the logs)
        d = c["data"]
        assert (d["batch_size"], d["crop_size"], d["cat_max_ratio"], d["mean"]) == (16, [256, 256], 0.75, "imagenet")
        assert d["augment"]["rotate"] == {"prob": 0.5, "degree": 180} and d["augment"]["photometric"]
    m = cfgs[0]["model"]
    assert m["arch_args"] == {"clip_weights": "pretrain/ViT-B-16.pt", "backbone_weights": "pretrain/swin_tiny_patch4_window7_224.pth"}
    assert m["schedule"] == {"warmup_iters": 1500, "warmup_start_factor": 1.0e-6, "max_iters": 40000, "power": 1.0, "min_lr": 0.0}
    task = ChangeDetectionTask(**{**m, "arch_args": TINY})
    opt = task.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    decay = {g["name"]: g["weight_decay"] for g in opt.param_groups}
    assert decay == {"default": 0.01, "no_decay_norm": 0.0, "*relative_position_bias_table*": 0.0}
    from changekit.engine.optim import build_param_groups

    groups = build_param_groups(task.model.named_parameters(), 1e-4, 0.01, m["param_groups"], m["no_decay_norm"])
    no_decay = {n for g in groups if g["weight_decay"] == 0 for n in g["param_names"]}
    # norms of Swin, the context decoder and the CSWin blocks; CLIP's ln_* keep decay, as mmengine's 'norm' key did
    assert {"backbone.norm3.weight", "context_decoder.decoder.0.norm1.bias", "decode_head.layer4.up.blk.norm2.weight"} <= no_decay
    assert "backbone.layers.0.blocks.0.attn.relative_position_bias_table" in no_decay
    assert "text_encoder.ln_final.weight" not in no_decay


def test_state_dict_round_trip_and_released_key_layout():
    import changekit

    m = CLIPFormer(**TINY).eval()
    sd = m.state_dict()
    assert not any("attn_mask" in k for k in sd)  # the causal mask is rebuilt, not stored
    other = CLIPFormer(**TINY)
    changekit.load_weights(other, sd)
    for k, v in other.state_dict().items():
        torch.testing.assert_close(v, sd[k], rtol=0, atol=0)
    # the released layout: glpool inside the backbone, contexts2 (1, 1, 13, C), difference decoder at top level
    released = {}
    for k, v in sd.items():
        if k.startswith("glpool."):
            released["backbone." + k] = v
        elif k == "contexts":
            released["contexts2"] = v[None]
        elif k.startswith("diff."):
            released[k[len("diff."):]] = v
        else:
            released[k] = v
    assert "linear_c4.proj.weight" in released and "decode_head.layer1.up.blk.low_rank_bilinear.WQ.weight" in released
    third = CLIPFormer(**TINY)
    changekit.load_weights(third, released)
    for k, v in third.state_dict().items():
        torch.testing.assert_close(v, sd[k], rtol=0, atol=0)


def test_clip_labeller_reads_resnet_clip():
    """RN50-style labellers (the README's LEVIR-CD+ and CDD rows): a ModifiedResNet image tower is rebuilt from its weights."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    from changekit.models.text.zero_shot import ClipZeroShot, build_clip

    rn = CLIP(
        32,
        vision_cfg=CLIPVisionCfg(layers=(1, 1, 1, 1), width=64, image_size=64, head_width=64),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1),
        quick_gelu=True,
    ).eval()
    rebuilt = build_clip(rn.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.encode_image(x), rn.encode_image(x))
    ranking = ClipZeroShot(rebuilt, RS_CLASSES_56).rank([np.full((50, 70, 3), 128.0)], top_k=3)[0]
    assert len(ranking) == 3 and ranking[0][1] >= ranking[1][1] >= ranking[2][1]
