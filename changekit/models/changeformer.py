"""ChangeFormer as open-cd builds it (``configs/changeformer/changeformer_mit-b{0,1}_256x256_40k_levircd.py``).

open-cd's ChangeFormer is a ``SiamEncoderDecoder``: one MiT encoder applied to both dates with shared weights,
``FeatureFusionNeck(policy='concat')`` concatenating the two dates' maps stage by stage (t1 first), and mmseg's
``SegformerHead`` (all-MLP decoder, 256 channels) on the doubled widths. The decoder predicts at 1/4 resolution;
``forward`` resizes its logits to the input size (bilinear, align_corners=False) as open-cd predicts.

Key layout is open-cd's: ``backbone.layers.*`` (mmseg MiT) and ``decode_head.{convs.i,fusion_conv}.{conv,bn}``,
``decode_head.conv_seg``; open-cd checkpoints load through :func:`changekit.load_weights` unchanged.
Note that this is open-cd's "ChangeFormer" (MiT + SegFormer head), not the 41 M-parameter model of the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from changekit.models.backbones.mit import MIT_SETTINGS, mit
from changekit.models.base import ChangekitModel
from changekit.models.registry import register_model

__all__ = ["ConvBNReLU", "SegformerHead", "ChangeFormer"]


class ConvBNReLU(nn.Module):
    """mmcv ``ConvModule`` with BN and ReLU: keys ``conv`` (no bias) and ``bn``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)
        # mmcv ConvModule default init
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SegformerHead(nn.Module):
    """mmseg's SegformerHead: per-stage 1x1 ConvBNReLU to ``channels``, upsample to stage 1, concat, fuse, classify."""

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int = 256,
        num_classes: int = 2,
        dropout_ratio: float = 0.1,
    ):
        super().__init__()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)  # defined first: mmseg's state_dict order
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.convs = nn.ModuleList(ConvBNReLU(c, channels) for c in in_channels)
        self.fusion_conv = ConvBNReLU(channels * len(in_channels), channels)
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)  # mmseg BaseDecodeHead.init_weights
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[2:]
        outs = [
            F.interpolate(conv(x), size=size, mode="bilinear", align_corners=False)
            for conv, x in zip(self.convs, feats)
        ]
        return self.conv_seg(self.dropout(self.fusion_conv(torch.cat(outs, dim=1))))


class ChangeFormer(ChangekitModel):
    """Siamese MiT + concat fusion + SegFormer head. ``forward(t1, t2)`` -> logits (B, num_classes, H, W)."""

    def __init__(
        self,
        size: str = "b0",
        num_classes: int = 2,
        in_channels: int = 3,
        channels: int = 256,
        drop_path_rate: float = 0.1,
        dropout_ratio: float = 0.1,
        backbone_weights: str | Path | None = None,
    ):
        super().__init__(num_classes, in_channels)
        self.backbone = mit(
            size, in_channels=in_channels, weights=backbone_weights, drop_path_rate=drop_path_rate
        )
        self.decode_head = SegformerHead(
            [2 * c for c in self.backbone.out_channels], channels, num_classes, dropout_ratio
        )

    def extract_features(self, t1: torch.Tensor, t2: torch.Tensor) -> list[torch.Tensor]:
        """Both dates through the shared encoder, fused per stage by channel concatenation (t1, t2)."""
        f1, f2 = self.backbone(t1), self.backbone(t2)
        return [torch.cat([a, b], dim=1) for a, b in zip(f1, f2)]

    def forward_decoder(self, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        """Raw decoder logits at 1/4 of the input resolution."""
        return self.decode_head(self.extract_features(t1, t2))



_SOURCE = "open-cd configs/changeformer/README.md"
_PUBLISHED = {"b0": [("LEVIR-CD", 90.52, _SOURCE)], "b1": [("LEVIR-CD", 91.11, _SOURCE)]}
for _size in MIT_SETTINGS:
    register_model(
        f"changeformer_mit-{_size}", ChangeFormer, _size,
        doc=f"open-cd ChangeFormer with a MiT-{_size} encoder. ``backbone_weights``: None, a local mmseg/NVlabs MiT "
            f"file, or ``'imagenet'`` (downloads mmseg's mit_{_size} once through torch.hub).",
        published=_PUBLISHED.get(_size, []),
    )
