"""Foundation-model weights from their official file formats, into :class:`FrozenViT` (timm key layout).

Formats recognised (by their keys, whatever the file name):

* **OpenAI CLIP**: the TorchScript archive ``ViT-B-16.pt`` (read without running its code) or a state dict with
  ``visual.*`` keys (``visual.conv1``, ``visual.class_embedding``, ``visual.transformer.resblocks.i.*``);
* **open_clip** state dicts (``.bin``, ``.safetensors``, ``.pt``: RemoteCLIP's ``RemoteCLIP-ViT-B-32.pt``, GeoRSCLIP),
  same ``visual.*`` names;
* **open-cd / mmseg ViT** (BAN's ``pretrain/clip_vit-base-patch16-224_3rdparty-d08f8887.pth`` made by
  ``clip2opencd.py``, ``image_encoder.``-prefixed; or the IN-21k ``augreg_*.pth`` made by ``vitjax2opencd.py``);
* **timm** state dicts (``.safetensors``/``.pth``: ``patch_embed.proj``, ``blocks.i.attn.qkv``...);
* **Google AugReg JAX** ``.npz`` (``Transformer/encoderblock_i/...``), read with timm's ``_load_weights``.

Blocks beyond the kept depth, final norms (``ln_post``/``norm``), projection heads and CLIP's text tower are
reported as ignored; everything the FM needs must be present with the right shape. Position embeddings whose
grid differs are resized like mmseg (bicubic on the grid, align_corners=False, CLS slot kept). A checkpoint
with a final encoder norm and no pre-norm (timm / JAX AugReg) has that norm loaded into ``norm_pre``: the
IN-21k quirk of open-cd's ``vitjax2opencd.py``, which BAN's IN-21k results were trained with.

Hub names for users who are online (never used by tests): see :mod:`changekit.models.hub`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from changekit.checkpoints import CheckpointError, extract_state_dict, read_checkpoint
from changekit.models.hub import hub_state_dict, is_hub_name

__all__ = [
    "detect_format",
    "clip_to_timm",
    "opencd_vit_to_timm",
    "timm_to_opencd_vit",
    "npz_to_timm",
    "resize_pos_embed",
    "read_fm_state_dict",
    "load_fm_weights",
]

_BLOCK_MAP_OPENCD = [
    ("ln1.", "norm1."),
    ("attn.attn.in_proj_weight", "attn.qkv.weight"),
    ("attn.attn.in_proj_bias", "attn.qkv.bias"),
    ("attn.attn.out_proj.", "attn.proj."),
    ("ln2.", "norm2."),
    ("ffn.layers.0.0.", "mlp.fc1."),
    ("ffn.layers.1.", "mlp.fc2."),
]
_BLOCK_MAP_CLIP = [
    ("ln_1.", "norm1."),
    ("attn.in_proj_weight", "attn.qkv.weight"),
    ("attn.in_proj_bias", "attn.qkv.bias"),
    ("attn.out_proj.", "attn.proj."),
    ("ln_2.", "norm2."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
]


def _map_block(rest: str, table: list[tuple[str, str]]) -> str | None:
    for a, b in table:
        if rest.startswith(a):
            return b + rest[len(a):]
    return None


def detect_format(sd: Mapping[str, Any]) -> str:
    """``'clip'``, ``'opencd'``, ``'timm'`` or raise: which key layout ``sd`` uses."""
    keys = list(sd)
    # open-cd first: BAN's pretrain files also hold CLIP-style ``decode_head.rec_with_attnbias.resblocks.*`` keys
    if any(re.search(r"(^|\.)layers\.\d+\.ln1\.", k) for k in keys) or any(k.endswith("patch_embed.projection.weight") for k in keys):
        return "opencd"
    if any(k.startswith(("visual.conv1.", "conv1.")) or k.startswith(("visual.transformer.resblocks.", "transformer.resblocks."))
           for k in keys):
        return "clip"
    if any(k.endswith("patch_embed.proj.weight") for k in keys):
        return "timm"
    raise CheckpointError("not a ViT checkpoint in OpenAI CLIP / open_clip, open-cd (mmseg) or timm layout "
                          f"(first keys: {', '.join(keys[:5])})")


def clip_to_timm(sd: Mapping[str, torch.Tensor], depth: int | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """OpenAI CLIP / open_clip ``visual.*`` keys -> timm keys. Returns (mapped, ignored keys)."""
    prefix = "visual." if any(k.startswith("visual.") for k in sd) else ""
    out: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for k, v in sd.items():
        if not k.startswith(prefix):
            ignored.append(k)  # text tower, logit_scale...
            continue
        r = k[len(prefix):]
        m = re.match(r"transformer\.resblocks\.(\d+)\.(.*)$", r)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            new = _map_block(rest, _BLOCK_MAP_CLIP)
            if new is None or (depth is not None and i >= depth):
                ignored.append(k)
            else:
                out[f"blocks.{i}.{new}"] = v
        elif r == "conv1.weight":
            out["patch_embed.proj.weight"] = v
        elif r == "class_embedding":
            out["cls_token"] = v.reshape(1, 1, -1)
        elif r == "positional_embedding":
            out["pos_embed"] = v.unsqueeze(0) if v.dim() == 2 else v
        elif r.startswith("ln_pre."):
            out["norm_pre." + r[len("ln_pre."):]] = v
        else:
            ignored.append(k)  # ln_post, proj, attnpool...
    return out, ignored


def opencd_vit_to_timm(sd: Mapping[str, torch.Tensor], depth: int | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """open-cd / mmseg ``VisionTransformer`` keys (optionally ``image_encoder.``/``backbone.``-prefixed) -> timm keys."""
    prefix = ""
    for p in ("image_encoder.", "backbone."):
        if any(k.startswith(p) for k in sd):
            prefix = p
            break
    out: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for k, v in sd.items():
        if not k.startswith(prefix):
            ignored.append(k)  # BAN pretrain files also hold decode_head.rec_with_attnbias.* (CLIP's last blocks)
            continue
        r = k[len(prefix):]
        m = re.match(r"layers\.(\d+)\.(.*)$", r)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            new = _map_block(rest, _BLOCK_MAP_OPENCD)
            if new is None or (depth is not None and i >= depth):
                ignored.append(k)
            else:
                out[f"blocks.{i}.{new}"] = v
        elif r in ("cls_token", "pos_embed"):
            out[r] = v
        elif r.startswith("patch_embed.projection."):
            out["patch_embed.proj." + r[len("patch_embed.projection."):]] = v
        elif r.startswith("ln_pre."):
            out["norm_pre." + r[len("ln_pre."):]] = v
        elif r.startswith("ln1."):  # mmseg's final norm (final_norm=True checkpoints)
            out["norm." + r[len("ln1."):]] = v
        else:
            ignored.append(k)
    return out, ignored


def timm_to_opencd_vit(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`opencd_vit_to_timm` (for tests and for exporting to open-cd)."""
    out = {}
    for k, v in sd.items():
        m = re.match(r"blocks\.(\d+)\.(.*)$", k)
        if m:
            rest = m.group(2)
            for a, b in _BLOCK_MAP_OPENCD:
                if rest.startswith(b):
                    rest = a + rest[len(b):]
                    break
            out[f"layers.{m.group(1)}.{rest}"] = v
        elif k.startswith("patch_embed.proj."):
            out["patch_embed.projection." + k[len("patch_embed.proj."):]] = v
        elif k.startswith("norm_pre."):
            out["ln_pre." + k[len("norm_pre."):]] = v
        else:
            out[k] = v
    return out


def _timm_filter(sd: Mapping[str, torch.Tensor], depth: int | None) -> tuple[dict[str, torch.Tensor], list[str]]:
    prefix = "model." if any(k.startswith("model.") for k in sd) and not any(k.startswith("blocks.") for k in sd) else ""
    out, ignored = {}, []
    for k, v in sd.items():
        r = k[len(prefix):]
        m = re.match(r"blocks\.(\d+)\.", r)
        if (m and depth is not None and int(m.group(1)) >= depth) or r.startswith(("head.", "fc_norm.", "head_drop")):
            ignored.append(k)
        else:
            out[r] = v
    return out, ignored


def npz_to_timm(path: str | Path, depth: int | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A Google AugReg / big_vision ViT ``.npz`` -> timm keys, through ``timm.models.vision_transformer._load_weights``.

    The architecture is read from the arrays; a temporary timm ViT with the file's own grid receives the
    weights (so timm does not resample anything), and its state dict is returned.
    """
    from timm.models.vision_transformer import VisionTransformer, _load_weights

    path = Path(path)
    with np.load(path) as w:
        keys = list(w.keys())
        pre = next((p for p in ("", "opt/target/", "params/") if f"{p}embedding/kernel" in w), None)
        if pre is None:
            raise CheckpointError(f"{path}: not a JAX ViT checkpoint (no 'embedding/kernel' array)")
        kh, kw, cin, dim = w[f"{pre}embedding/kernel"].shape
        n_blocks = len({m.group(1) for k in keys if (m := re.match(re.escape(pre) + r"Transformer/encoderblock_(\d+)/", k))})
        heads = w[f"{pre}Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"].shape[1]
        mlp = w[f"{pre}Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"].shape[1]
        n_pos = w[f"{pre}Transformer/posembed_input/pos_embedding"].shape[1]
    has_cls = any(k == f"{pre}cls" for k in keys)
    grid = int(math.isqrt(n_pos - int(has_cls)))
    keep = n_blocks if depth is None else min(depth, n_blocks)
    tmp = VisionTransformer(img_size=grid * kh, patch_size=kh, in_chans=cin, embed_dim=dim, depth=keep, num_heads=heads,
                            mlp_ratio=mlp / dim, class_token=has_cls, num_classes=0, weight_init="skip")
    _load_weights(tmp, str(path), prefix=pre)
    used = {"embedding/kernel", "embedding/bias", "cls", "Transformer/posembed_input/pos_embedding",
            "Transformer/encoder_norm/scale", "Transformer/encoder_norm/bias"}
    ignored = []
    for k in keys:
        r = k[len(pre):]
        m = re.match(r"Transformer/encoderblock_(\d+)/", r)
        if r in used or (m and int(m.group(1)) < keep):
            continue
        ignored.append(k)  # head/*, pre_logits/*, blocks beyond the kept depth
    return {k: v.clone() for k, v in tmp.state_dict().items()}, ignored


def resize_pos_embed(pos: torch.Tensor, grid: tuple[int, int], num_prefix: int = 1) -> torch.Tensor:
    """mmseg ``resize_pos_embed``: bicubic (align_corners=False, no antialias) on the square grid, prefix kept."""
    n = pos.shape[1] - num_prefix
    g = math.isqrt(n)
    if g * g != n:
        raise CheckpointError(f"position embedding with {n} grid tokens is not a square grid")
    prefix, body = pos[:, :num_prefix], pos[:, num_prefix:]
    body = body.reshape(1, g, g, -1).permute(0, 3, 1, 2).float()
    body = F.interpolate(body, size=grid, mode="bicubic", align_corners=False)
    body = body.flatten(2).transpose(1, 2).to(pos.dtype)
    return torch.cat([prefix, body], dim=1)


def read_fm_state_dict(source: str | Path | Mapping[str, torch.Tensor], depth: int | None = None
                       ) -> tuple[dict[str, torch.Tensor], list[str], str]:
    """Read FM weights in any supported format; return (timm-layout state dict, ignored keys, format name)."""
    if isinstance(source, Mapping):
        sd = extract_state_dict(source, "state dict")
    else:
        text = str(source)
        if is_hub_name(text):
            sd = hub_state_dict(text)
        elif text.endswith(".npz"):
            if not Path(text).is_file():
                raise CheckpointError(f"{text}: no such weight file")
            out, ignored = npz_to_timm(text, depth)
            return out, ignored, "jax-npz"
        else:
            sd = extract_state_dict(read_checkpoint(text), text)
    fmt = detect_format(sd)
    if fmt == "clip":
        out, ignored = clip_to_timm(sd, depth)
    elif fmt == "opencd":
        out, ignored = opencd_vit_to_timm(sd, depth)
    else:
        out, ignored = _timm_filter(sd, depth)
    return out, ignored, fmt


def load_fm_weights(fm: torch.nn.Module, source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Load FM weights into ``fm`` (a :class:`FrozenViT`), strictly: every FM parameter must come from the file.

    Returns a report ``{'format', 'loaded', 'ignored'}``. Raises :class:`CheckpointError` naming the file and the
    missing / unexpected / mis-shaped keys otherwise.
    """
    model = fm.model
    own = model.state_dict()
    depth = len(model.blocks)
    name = "state dict" if isinstance(source, Mapping) else str(source)
    sd, ignored, fmt = read_fm_state_dict(source, depth)
    if "norm_pre.weight" in own and "norm_pre.weight" not in sd and "norm.weight" in sd:
        # IN-21k quirk (vitjax2opencd.py): the JAX final encoder_norm becomes ln_pre.
        sd["norm_pre.weight"], sd["norm_pre.bias"] = sd.pop("norm.weight"), sd.pop("norm.bias")
    for k in [k for k in sd if k not in own and k.startswith(("norm.", "norm_pre."))]:
        sd.pop(k)
        ignored.append(k)  # a final norm the truncated FM does not have
    if "pos_embed" in sd and "pos_embed" in own and sd["pos_embed"].shape != own["pos_embed"].shape:
        n_prefix = own["pos_embed"].shape[1] - math.prod(model.patch_embed.grid_size)
        sd["pos_embed"] = resize_pos_embed(sd["pos_embed"], tuple(model.patch_embed.grid_size), max(n_prefix, 0))
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        lines = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", shapes)):
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:8]) + (" ..." if len(items) > 8 else ""))
        raise CheckpointError(f"{name} ({fmt} layout) does not fit foundation model {getattr(fm, 'name', '')!r}:\n"
                              + "\n".join(lines) + "\n  Check that the file is the model the config names.")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)
    return {"format": fmt, "loaded": sorted(sd), "ignored": ignored}
