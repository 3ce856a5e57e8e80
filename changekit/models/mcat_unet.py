"""MCAT-UNet: single-date semantic segmentation with a SegNeXt MSCAN encoder and a cross-shaped-window UNet decoder
(wujiang0156/MCAT-UNet, configs ``segnext_csheadunet-s_1xb4-adamw-100k_{potsdam,vaihingen,loveda}-512x512``): the
image-only ancestor of CLIPFormer's text-guided decoder.

Data path (512² crop, MSCAN-S): the encoder gives e1 64×128², e2 128×64², e3 320×32², e4 512×16². The decoder
(``CSHeadUNet``) climbs from the deepest map: a CSWin block (stripes of width 1) on e4, bilinear ×2, 1×1 conv-BN-ReLU
to 320 and add e3; a CSWin block, ×2, conv to 128 and add e2; a CSWin block, ×2 and conv-BN-ReLU to 512, added to
e1 lifted to 512 by conv-BN-ReLU; Dropout2d(0.1) and a 1×1 classifier give logits at 1/4, resized to the input.
Training adds mmseg's auxiliary ``FCNHead`` on e3 (one 3×3 conv-BN-ReLU to 256, classifier; loss weight 0.4).

As released, each CSWin block also holds ``local1`` (3×3) / ``local2`` (1×1) conv-BN-ReLU modules that its forward
never calls, and the decoder a ``convs[1]`` it never uses: they are kept (frozen) so that released checkpoints load
strictly and the parameter count matches; they take no part in the output. Module names follow the released code
(``backbone.*`` = mmseg's MSCAN, ``decode_head.blk3.attns.0.get_v``, ``auxiliary_head.convs.0``...).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from changekit.errors import ConfigError
from changekit.models.backbones.mscan import mscan
from changekit.models.ban.heads import ConvModule
from changekit.models.base import ChangekitModel
from changekit.models.cswin import CSWinBlock
from changekit.models.registry import register_model

__all__ = ["MCATUNet", "CSHeadUNet", "FCNHead", "MCATBlock", "mcat_unet"]


class MCATBlock(CSWinBlock):
    """MCAT-UNet's ``CrossShapedGLAttention``: the shared CSWin block plus the released, unused local conv branch."""

    def __init__(self, dim: int, num_heads: int, split_size: int = 1, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__(dim, num_heads, split_size, mlp_ratio, drop_path=drop_path)
        self.local1 = ConvModule(dim, dim, 3, padding=1, norm=True)
        self.local2 = ConvModule(dim, dim, 1, norm=True)
        for p in (*self.local1.parameters(), *self.local2.parameters()):
            p.requires_grad_(False)  # never called in forward (commented out in the released code)

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """NCHW in, NCHW out."""
        b, c, h, w = x.shape
        t = super().forward(x.flatten(2).transpose(1, 2), (h, w))
        return t.transpose(1, 2).reshape(b, c, h, w)


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class CSHeadUNet(nn.Module):
    """The cross-shaped-window UNet decoder (``decode_head``); logits at the first input's (1/4) resolution."""

    def __init__(self, in_channels: Sequence[int] = (64, 128, 320, 512), channels: int = 512, num_classes: int = 6,
                 num_heads: int = 8, mlp_ratio: float = 4.0, drop_path_rate: float = 0.1, dropout_ratio: float = 0.1):
        super().__init__()
        c = list(in_channels)
        if len(c) != 4:
            raise ConfigError(f"CSHeadUNet takes four encoder maps, got in_channels={c}")
        if channels != c[-1]:  # e1 is lifted to the last width and added to the convlast output
            raise ConfigError(f"CSHeadUNet: channels ({channels}) must equal the deepest encoder width ({c[-1]})")
        self.in_channels, self.channels, self.num_classes = c, channels, num_classes
        # convs[i]: in_channels[i] -> in_channels[i - 1] (so convs[0] lifts e1 to the last width), as released
        self.convs = nn.ModuleList(ConvModule(c[i], c[i - 1], 1, norm=True) for i in range(4))
        for p in self.convs[1].parameters():
            p.requires_grad_(False)  # built but never used by the released forward
        self.convlast = ConvModule(c[1], channels, 1, norm=True)
        dpr = torch.linspace(0, drop_path_rate, 3).tolist()
        self.blk1 = MCATBlock(c[1], 2, 1, mlp_ratio, dpr[0])
        self.blk2 = MCATBlock(c[2], num_heads, 1, mlp_ratio, dpr[1])
        self.blk3 = MCATBlock(c[3], num_heads, 1, mlp_ratio, dpr[2])
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0, 0.01)  # mmseg's decode-head init
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        e1, e2, e3, e4 = inputs
        x = self.convs[3](_resize(self.blk3.forward_map(e4), e3.shape[-2:])) + e3
        x = self.convs[2](_resize(self.blk2.forward_map(x), e2.shape[-2:])) + e2
        x = self.convlast(_resize(self.blk1.forward_map(x), e1.shape[-2:])) + self.convs[0](e1)
        return self.conv_seg(self.dropout(x))


class FCNHead(nn.Module):
    """mmseg's ``FCNHead`` with one 3×3 conv (the auxiliary head on e3, used by the training loss only)."""

    def __init__(self, in_channels: int = 320, channels: int = 256, num_classes: int = 6, dropout_ratio: float = 0.1):
        super().__init__()
        self.convs = nn.Sequential(ConvModule(in_channels, channels, 3, padding=1, norm=True))
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.dropout(self.convs(x)))


class MCATUNet(ChangekitModel):
    """Single-date segmentation: ``forward(image)`` → logits (B, num_classes, H, W) at the input's resolution."""

    task = "segmentation"  # one image in, a class map out (change models take two dates)
    num_dates = 1
    inference_channels_last = True  # 1.1x in fp32, 1.9x in bf16 (benchmarks/channels_last.py)

    def __init__(self, backbone: nn.Module, decode_head: CSHeadUNet, auxiliary_head: FCNHead | None = None):
        super().__init__(decode_head.num_classes, backbone.in_channels)
        self.backbone = backbone
        self.decode_head = decode_head
        self.auxiliary_head = auxiliary_head

    def forward_all(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw 1/4 (decode) and 1/16 (auxiliary, when built) logits, for the training loss."""
        feats = self.backbone(image)
        out = {"seg": self.decode_head(feats)}
        if self.auxiliary_head is not None:
            out["aux"] = self.auxiliary_head(feats[2])
        return out

    def forward_decoder(self, image: torch.Tensor) -> torch.Tensor:
        """Logits at 1/4 of the input's resolution."""
        return self.decode_head(self.backbone(image))


def mcat_unet(size: str = "s", num_classes: int = 6, in_channels: int = 3, *, channels: int = 512,
              drop_path_rate: float = 0.1, auxiliary: bool = True, backbone_weights: str | Path | None = None,
              weights: str | Path | None = None, **decoder: Any) -> MCATUNet:
    """MCAT-UNet with MSCAN-``size`` (MCAT-UNet uses ``s``).

    backbone_weights: mmseg's ImageNet MSCAN file (``mscan_s_20230227-f33ccdf2.pth``) or ``"imagenet"`` (download);
    weights: a whole MCAT-UNet checkpoint (ours, or the released mmseg one), loaded strictly.
    auxiliary: build the FCN auxiliary head (training loss weight 0.4, as the released configs).
    """
    backbone = mscan(size, in_channels=in_channels, drop_path_rate=drop_path_rate,
                     weights=None if weights else backbone_weights)
    head = CSHeadUNet(backbone.out_channels, channels, num_classes, **decoder)
    aux = FCNHead(backbone.out_channels[2], 256, num_classes) if auxiliary else None
    model = MCATUNet(backbone, head, aux)
    if weights is not None:
        from changekit.checkpoints import load_weights

        load_weights(model, weights)
    return model


def mcat_unet_any(size: str = "s", **kwargs: Any) -> MCATUNet:
    """MCAT-UNet with any MSCAN size (``t``, ``s``, ``b``, ``l``); the decoder follows the encoder's widths
    (``channels`` defaults to the deepest width)."""
    from changekit.models.backbones.mscan import MSCAN_SETTINGS

    if size not in MSCAN_SETTINGS:
        raise ConfigError(f"MCAT-UNet: unknown MSCAN size {size!r}; choose from {', '.join(MSCAN_SETTINGS)}")
    kwargs.setdefault("channels", MSCAN_SETTINGS[size]["embed_dims"][-1])
    return mcat_unet(size, **kwargs)


register_model("mcat-unet_segnext-s", mcat_unet, "s",
               doc="MCAT-UNet (SegNeXt MSCAN-S + csheadunet-s), the released ``segnext_csheadunet-s`` configs.")
register_model("mcat-unet", mcat_unet_any)
