"""Frozen foundation-model (FM) image encoders for BAN, built on timm's ViT blocks.

BAN (Li et al., 2024) runs a *frozen* ViT on each date and feeds raw residual-stream features from a few
blocks into its trainable Bi-TAB. The reference builds these ViTs with mmseg's ``VisionTransformer``
(``configs/_base_/models/ban_vit-b16.py``); we build the identical network from timm's
``VisionTransformer`` (``Block`` with a fused ``qkv`` = ``nn.MultiheadAttention``'s ``in_proj`` layout):

* CLIP / RemoteCLIP / GeoRSCLIP: ``ln_pre`` (timm ``norm_pre``), no final norm, QuickGELU, LayerNorm eps 1e-5,
  no patch-embedding bias, truncated to the first 9 of 12 (B) or 18 of 24 (L) blocks;
* ImageNet-21k AugReg: GELU, LayerNorm eps 1e-6, patch bias, all blocks, and ``ln_pre`` as well (it receives
  the JAX checkpoint's *final* ``encoder_norm``: the open-cd converter's quirk, reproduced on purpose).

Features are the token maps after the blocks in ``out_indices`` (no norm, CLS and other prefix tokens dropped),
(B, C, h, w). Any other timm ViT-style model (DINOv2, EVA, SigLIP, DeiT...) can serve as FM by name
(:func:`timm_fm`); its feature blocks default to the last block of each third of the network.

Cost: the FM never needs gradients. :class:`FrozenViT` keeps every parameter at ``requires_grad=False``,
stays in eval mode when its parent is put in train mode, runs under ``torch.no_grad()`` (no activations kept
for backward) and is fed both dates as one batch by :class:`changekit.models.ban.BAN`. For evaluation it can
cache its features on disk (``cache_dir``), keyed by a hash of each resized input image and of the weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from changekit.atomic import atomic_write

__all__ = ["FM_PRESETS", "FrozenViT", "build_fm", "preset_fm", "vit_fm", "timm_fm", "default_out_indices"]

# name -> architecture of BAN's foundation models (ban_and_opencd.md §1.2), and the file its configs name.
FM_PRESETS: dict[str, dict[str, Any]] = {
    "clip_vit-b16": dict(kind="clip", patch_size=16, img_size=224, embed_dim=768, num_heads=12, depth=12,
                         num_layers=9, out_indices=(2, 5, 8),
                         weights="pretrain/clip_vit-base-patch16-224_3rdparty-d08f8887.pth", hub="open_clip:ViT-B-16/openai"),
    "clip_vit-l14-336": dict(kind="clip", patch_size=14, img_size=336, embed_dim=1024, num_heads=16, depth=24,
                             num_layers=18, out_indices=(5, 11, 17),
                             weights="pretrain/clip_vit-large-patch14-336_3rdparty-0b5df9cb.pth", hub="open_clip:ViT-L-14-336/openai"),
    "remoteclip_vit-b32": dict(kind="clip", patch_size=32, img_size=224, embed_dim=768, num_heads=12, depth=12,
                               num_layers=9, out_indices=(2, 5, 8),
                               weights="pretrain/RemoteCLIP-ViT-B-32.pth", hub="hf-hub:chendelong/RemoteCLIP/RemoteCLIP-ViT-B-32.pt"),
    "remoteclip_vit-l14": dict(kind="clip", patch_size=14, img_size=224, embed_dim=1024, num_heads=16, depth=24,
                               num_layers=18, out_indices=(5, 11, 17),
                               weights="pretrain/RemoteCLIP-ViT-L-14.pth", hub="hf-hub:chendelong/RemoteCLIP/RemoteCLIP-ViT-L-14.pt"),
    "georsclip_vit-b32": dict(kind="clip", patch_size=32, img_size=224, embed_dim=768, num_heads=12, depth=12,
                              num_layers=9, out_indices=(2, 5, 8), weights="pretrain/RS5M_ViT-B-32.pth"),
    "georsclip_vit-l14-336": dict(kind="clip", patch_size=14, img_size=336, embed_dim=1024, num_heads=16, depth=24,
                                  num_layers=18, out_indices=(5, 11, 17), weights="pretrain/RS5M_ViT-L-14-336.pth"),
    "in21k_vit-b16": dict(kind="in21k", patch_size=16, img_size=224, embed_dim=768, num_heads=12, depth=12,
                          num_layers=12, out_indices=(5, 8, 11),
                          weights="pretrain/augreg_B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.pth",
                          hub="timm:vit_base_patch16_224.augreg_in21k"),
    "in21k_vit-l16": dict(kind="in21k", patch_size=16, img_size=224, embed_dim=1024, num_heads=16, depth=24,
                          num_layers=24, out_indices=(11, 17, 23),
                          weights="pretrain/augreg_L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0.pth",
                          hub="timm:vit_large_patch16_224.augreg_in21k"),
}


class _PatchEmbedWithBias:
    """timm's ``VisionTransformer`` drops the patch bias whenever ``pre_norm`` is set (CLIP); AugReg has both."""

    def __new__(cls, *args: Any, bias: bool = True, **kwargs: Any):
        from timm.layers import PatchEmbed

        return PatchEmbed(*args, bias=True, **kwargs)


def default_out_indices(num_blocks: int, n: int = 3) -> tuple[int, ...]:
    """The last block of each of ``n`` equal parts: 12 blocks -> (3, 7, 11), 24 -> (7, 15, 23)."""
    return tuple(max(0, round(num_blocks * (k + 1) / n) - 1) for k in range(n))


def _as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


class FrozenViT(nn.Module):
    """A frozen timm ViT returning raw token maps after ``out_indices`` (list of (B, C, h, w) tensors).

    ``forward(x)`` resizes ``x`` to ``img_size`` (bilinear, align_corners=False, no antialias, as BAN's
    ``F.interpolate``) and runs the encoder under ``torch.no_grad()``.
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int], img_size: int | Sequence[int], name: str = "vit",
                 cache_dir: str | Path | None = None):
        super().__init__()
        self.model = model
        self.name = name
        self.out_indices = tuple(int(i) for i in out_indices)
        self.img_size = _as_hw(img_size)
        self.embed_dim = int(getattr(model, "embed_dim", getattr(model, "num_features", 0)))
        self.out_channels = [self.embed_dim] * len(self.out_indices)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.frozen = True  # the benchmark flips this to measure the cost of running the FM with autograd
        self._weights_tag: str | None = None
        self.freeze()

    def freeze(self) -> None:
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> FrozenViT:
        super().train(mode)
        if self.frozen:
            self.model.eval()  # frozen: dropout / drop-path off whatever the parent does
        return self

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.img_size:
            return x
        return F.interpolate(x, size=self.img_size, mode="bilinear", align_corners=False, antialias=False)

    def _encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model.forward_intermediates(
            x, indices=list(self.out_indices), norm=False, stop_early=True, output_fmt="NCHW", intermediates_only=True))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.resize(x)
        if not self.frozen:
            return self._encode(x)
        with torch.no_grad():
            if self.cache_dir is not None and not self.training:
                return self._cached(x)
            return self._encode(x)

    # ------------------------------------------------------------------------------------- feature cache
    def weights_tag(self) -> str:
        """A short fingerprint of the architecture and weights (computed once; weights never change)."""
        if self._weights_tag is None:
            h = hashlib.sha256(f"{self.name}|{self.out_indices}|{self.img_size}".encode())
            for k, v in self.model.state_dict().items():
                v = v.detach().float().flatten()
                h.update(k.encode())
                h.update(torch.stack([v.sum(), v.abs().sum(), v[:: max(1, v.numel() // 64)].sum()]).numpy().tobytes())
            self._weights_tag = h.hexdigest()[:16]
        return self._weights_tag

    def _cached(self, x: torch.Tensor) -> list[torch.Tensor]:
        assert self.cache_dir is not None
        folder = self.cache_dir / self.weights_tag()
        folder.mkdir(parents=True, exist_ok=True)
        keys = [hashlib.sha256(xi.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest() for xi in x]
        per_item: list[list[torch.Tensor] | None] = []
        for k in keys:
            path = folder / f"{k}.pt"
            per_item.append(torch.load(path, map_location=x.device, weights_only=True) if path.is_file() else None)
        todo = [i for i, f in enumerate(per_item) if f is None]
        if todo:
            feats = self._encode(x[todo])
            for j, i in enumerate(todo):
                item = [f[j].clone() for f in feats]
                per_item[i] = item
                with atomic_write(folder / f"{keys[i]}.pt") as tmp:
                    torch.save([t.cpu() for t in item], tmp)
        return [torch.stack([item[s].to(x.device, x.dtype) for item in per_item]) for s in range(len(self.out_indices))]


def vit_fm(kind: str = "clip", *, patch_size: int, img_size: int | Sequence[int], embed_dim: int, num_heads: int,
           num_layers: int, out_indices: Sequence[int], mlp_ratio: float = 4.0, name: str = "vit",
           device: str | torch.device | None = None, cache_dir: str | Path | None = None, **_: Any) -> FrozenViT:
    """A frozen ViT in BAN's reference configuration: ``kind='clip'`` (QuickGELU, LN eps 1e-5, no patch bias) or
    ``'in21k'`` (GELU, eps 1e-6, patch bias); both with ``ln_pre`` (timm ``norm_pre``), no final norm, CLS token,
    and only the first ``num_layers`` blocks built. Random weights unless loaded.

    ``device='meta'`` builds without allocating or initialising: call ``fm.to_empty(device='cpu')`` and load every
    weight (fast for the large models), or keep it on meta to count parameters and check shapes.
    """
    from timm.layers import PatchEmbed, QuickGELU
    from timm.models.vision_transformer import VisionTransformer

    if kind not in ("clip", "in21k"):
        raise ValueError(f"unknown ViT kind {kind!r}; use 'clip' or 'in21k'")
    clip = kind == "clip"
    vit = VisionTransformer(
        img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=int(num_layers), num_heads=num_heads,
        mlp_ratio=mlp_ratio, qkv_bias=True, class_token=True, pre_norm=True, final_norm=False, num_classes=0,
        global_pool="token", weight_init="skip" if device is not None and torch.device(device).type == "meta" else "",
        norm_layer=partial(nn.LayerNorm, eps=1e-5 if clip else 1e-6),
        act_layer=QuickGELU if clip else nn.GELU,
        embed_layer=PatchEmbed if clip else _PatchEmbedWithBias,
        device=device,
    )
    return FrozenViT(vit, out_indices, img_size, name=name, cache_dir=cache_dir)


def preset_fm(preset: str, *, num_layers: int | None = None, out_indices: Sequence[int] | None = None,
              img_size: int | None = None, device: str | torch.device | None = None,
              cache_dir: str | Path | None = None) -> FrozenViT:
    """Build one of BAN's FMs (:data:`FM_PRESETS`) with random weights (load them with ``loaders.load_fm_weights``)."""
    if preset not in FM_PRESETS:
        raise KeyError(f"unknown foundation model {preset!r}; presets: {', '.join(FM_PRESETS)} (or timm:<name>)")
    cfg = dict(FM_PRESETS[preset])
    if num_layers is not None:
        cfg["num_layers"] = num_layers
    if out_indices is not None:
        cfg["out_indices"] = tuple(out_indices)
    if img_size is not None:
        cfg["img_size"] = img_size
    return vit_fm(**cfg, name=preset, device=device, cache_dir=cache_dir)


def timm_fm(name: str, *, pretrained: bool = False, out_indices: Sequence[int] | None = None,
            img_size: int | None = None, weights: str | Path | None = None, cache_dir: str | Path | None = None,
            **kwargs: Any) -> FrozenViT:
    """Any timm ViT-style model (one offering ``forward_intermediates``) as a frozen FM, by timm name.

    ``pretrained=True`` downloads timm's weights (the only networked path); ``weights`` loads a local timm
    ``.safetensors``/``.pth``/``.npz`` file through timm's own filters. Blocks after the last feature block are
    dropped; ``out_indices`` default to the last block of each third.
    """
    import timm

    if img_size is not None:
        kwargs["img_size"] = img_size
    if weights is not None:
        kwargs["pretrained_cfg_overlay"] = dict(file=str(weights))
        pretrained = True
    model = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    if not hasattr(model, "forward_intermediates"):
        raise ValueError(f"timm model {name!r} has no forward_intermediates(); it cannot serve as a BAN foundation model")
    n = len(model.blocks)
    idx = tuple(out_indices) if out_indices is not None else default_out_indices(n)
    model.prune_intermediate_layers(list(idx), prune_norm=True, prune_head=True)
    pe = getattr(model, "patch_embed", None)
    size = img_size or (tuple(pe.img_size) if pe is not None and getattr(pe, "img_size", None) else
                        model.pretrained_cfg.get("input_size", (3, 224, 224))[1:])
    return FrozenViT(model, idx, size, name=f"timm:{name}", cache_dir=cache_dir)


def build_fm(fm: str | Mapping[str, Any], **kwargs: Any) -> FrozenViT:
    """``fm`` is a preset name (``clip_vit-b16``...), ``timm:<model name>`` or a mapping of :func:`vit_fm` arguments."""
    if isinstance(fm, Mapping):
        spec = {**fm, **{k: v for k, v in kwargs.items() if v is not None}}
        return vit_fm(**spec)
    if fm.startswith("timm:"):
        kwargs.pop("device", None)
        kwargs.pop("num_layers", None)
        return timm_fm(fm[len("timm:"):], **kwargs)
    return preset_fm(fm, **kwargs)
