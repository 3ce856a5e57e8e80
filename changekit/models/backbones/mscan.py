"""SegNeXt's Multi-Scale Convolutional Attention Network (MSCAN), laid out like mmseg's ``MSCAN``.

Architecture (Guo et al., "SegNeXt", NeurIPS 2022, as mmseg 1.2.2 builds it), four stages:

* stage 1 embeds with a stem (3×3 s2 conv → BN → GELU → 3×3 s2 conv → BN), stages 2–4 with a 3×3 s2 conv → BN;
* each block, on the NCHW map: ``x += DropPath(γ₁ · attn(BN(x)))`` and ``x += DropPath(γ₂ · mlp(BN(x)))``
  (layer scales γ initialised to 0.01); ``attn`` = 1×1 conv → GELU → MSCA → 1×1 conv, plus its input; MSCA =
  a depth-wise 5×5 conv, three branches of depth-wise strip convs (1×7/7×1, 1×11/11×1, 1×21/21×1) added to it,
  a 1×1 channel mix, and the result multiplies the MSCA input; ``mlp`` = 1×1 → depth-wise 3×3 → GELU → 1×1;
* a LayerNorm over the channels ends every stage; outputs at strides 4/8/16/32.

State-dict keys are mmseg's (``patch_embed1.proj.0``, ``block1.0.attn.spatial_gating_unit.conv0_1``,
``block1.0.layer_scale_1``, ``norm1``...), so mmseg's ImageNet files (``mscan_s_20230227-f33ccdf2.pth``...) load
strictly with :func:`load_mscan_pretrained`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from timm.layers import DropPath

from changekit.models.backbones.weight_init import mmseg_conv_init, read_imagenet_weights
from changekit.models.recompute import recompute_dw_gelu

__all__ = ["MSCAN", "MSCAN_SETTINGS", "MSCAN_PRETRAINED_URLS", "mscan", "load_mscan_pretrained"]

MSCAN_SETTINGS: dict[str, dict[str, Any]] = {
    "t": dict(embed_dims=(32, 64, 160, 256), mlp_ratios=(8, 8, 4, 4), depths=(3, 3, 5, 2)),
    "s": dict(embed_dims=(64, 128, 320, 512), mlp_ratios=(8, 8, 4, 4), depths=(2, 2, 4, 2)),
    "b": dict(embed_dims=(64, 128, 320, 512), mlp_ratios=(8, 8, 4, 4), depths=(3, 3, 12, 3)),
    "l": dict(embed_dims=(64, 128, 320, 512), mlp_ratios=(8, 8, 4, 4), depths=(3, 5, 27, 3)),
}
# ImageNet-1k weights in mmseg's layout (the files SegNeXt's mmseg configs and MCAT-UNet's name)
MSCAN_PRETRAINED_URLS: dict[str, str] = {
    "t": "https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segnext/mscan_t_20230227-119e8c9f.pth",
    "s": "https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segnext/mscan_s_20230227-f33ccdf2.pth",
    "b": "https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segnext/mscan_b_20230227-3ab7d230.pth",
    "l": "https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segnext/mscan_l_20230227-cef260d4.pth",
}
_KERNELS = ((1, 7), (1, 11), (1, 21))


class StemConv(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(cin, cout // 2, 3, 2, 1), nn.BatchNorm2d(cout // 2), nn.GELU(),
            nn.Conv2d(cout // 2, cout, 3, 2, 1), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class PatchEmbed(nn.Module):
    """3×3 stride-2 conv → BN (mmseg's ``OverlapPatchEmbed`` in MSCAN)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 3, 2, 1)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class MSCA(nn.Module):
    """Multi-scale convolutional attention (``spatial_gating_unit``): strip-conv branches gate the input."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(c, c, 5, padding=2, groups=c)
        for i, (kh, kw) in enumerate(_KERNELS):
            self.add_module(f"conv{i}_1", nn.Conv2d(c, c, (kh, kw), padding=(kh // 2, kw // 2), groups=c))
            self.add_module(f"conv{i}_2", nn.Conv2d(c, c, (kw, kh), padding=(kw // 2, kh // 2), groups=c))
        self.conv3 = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.conv0(x)
        branches = [getattr(self, f"conv{i}_2")(getattr(self, f"conv{i}_1")(attn)) for i in range(len(_KERNELS))]
        return self.conv3(attn + sum(branches)) * x


class SpatialAttention(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(c, c, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = MSCA(c)
        self.proj_2 = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class ConvMlp(nn.Module):
    """1×1 → depth-wise 3×3 → GELU → 1×1 (dw conv + GELU recomputed in backward while training)."""

    def __init__(self, c: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, c, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(recompute_dw_gelu(self, self.dwconv, self.act, self.fc1(x)))
        return self.drop(self.fc2(x))


class MSCABlock(nn.Module):
    def __init__(self, c: int, mlp_ratio: float, drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(c)
        self.attn = SpatialAttention(c)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(c)
        self.mlp = ConvMlp(c, int(c * mlp_ratio), drop)
        self.layer_scale_1 = nn.Parameter(1e-2 * torch.ones(c))
        self.layer_scale_2 = nn.Parameter(1e-2 * torch.ones(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


class MSCAN(nn.Module):
    """``forward(x)`` → the four stage maps (NCHW, strides 4/8/16/32, ``embed_dims`` channels)."""

    def __init__(self, in_channels: int = 3, embed_dims: Sequence[int] = (64, 128, 320, 512),
                 mlp_ratios: Sequence[float] = (8, 8, 4, 4), depths: Sequence[int] = (2, 2, 4, 2),
                 drop_rate: float = 0.0, drop_path_rate: float = 0.1) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = list(embed_dims)
        self.num_stages = len(depths)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        cur = 0
        for i, (c, depth) in enumerate(zip(embed_dims, depths)):
            embed = StemConv(in_channels, c) if i == 0 else PatchEmbed(embed_dims[i - 1], c)
            setattr(self, f"patch_embed{i + 1}", embed)
            setattr(self, f"block{i + 1}", nn.ModuleList(
                MSCABlock(c, mlp_ratios[i], drop_rate, dpr[cur + j]) for j in range(depth)))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(c))
            cur += depth
        self.init_weights()

    def init_weights(self) -> None:
        """mmseg's: trunc-normal(0.02) linears, unit LayerNorms, He-normal (fan-out) convs with zero bias."""
        mmseg_conv_init(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                x = blk(x)
            x = getattr(self, f"norm{i}")(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # LayerNorm over channels
            outs.append(x)
        return outs


def load_mscan_pretrained(model: MSCAN, weights: str | Path | Mapping[str, torch.Tensor], size: str | None = None) -> MSCAN:
    """Load ImageNet MSCAN weights strictly: a local mmseg file, a state dict, a URL, or ``"imagenet"`` (mmseg's file
    for ``size``, downloaded through ``torch.hub`` only when asked). A ``backbone.`` prefix is stripped and the
    ImageNet classifier (``head.*``) dropped; every other key must match."""
    from changekit.checkpoints import check_state_dict

    source, sd = read_imagenet_weights(weights, MSCAN_PRETRAINED_URLS, size, "MSCAN")
    sd = {k.removeprefix("backbone."): v for k, v in sd.items() if not k.startswith(("head.", "backbone.head."))}
    check_state_dict(model, sd, source)
    model.load_state_dict(sd, strict=True)
    return model


def mscan(size: str = "s", in_channels: int = 3, weights: str | Path | None = None, **kwargs: Any) -> MSCAN:
    """MSCAN-``size`` (t, s, b, l) with SegNeXt's settings; ``weights`` as in :func:`load_mscan_pretrained`."""
    if size not in MSCAN_SETTINGS:
        raise ValueError(f"unknown MSCAN size {size!r}; choose from {', '.join(MSCAN_SETTINGS)}")
    model = MSCAN(in_channels=in_channels, **{**MSCAN_SETTINGS[size], **kwargs})
    if weights:
        load_mscan_pretrained(model, weights, size)
    return model
