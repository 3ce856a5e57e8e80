"""BiT (Chen, Qi & Shi, TGRS 2021) as open-cd builds ``bit_r18_256x256_40k_levircd``.

A Siamese ResNet-18 V1c truncated after its third stage (strides 1, 2, 1: output stride 8, 256 channels),
open-cd's ``FeatureFusionNeck(policy='concat')`` (parameter-free; here the head simply takes both maps) and
the BiT transformer head (:mod:`changekit.models.heads.bit_head`). The head's output is already at input
resolution for inputs whose sides are multiples of 8; otherwise it is resized bilinearly.

State-dict keys are open-cd's (``backbone.stem.0.weight``, ``backbone.layer1.0.conv1.weight``…,
``decode_head.encoder.0.attn.to_q.weight``…), so open-cd checkpoints load with :func:`changekit.load_weights`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from changekit.models.backbones.resnet import ResNetV1c, load_resnet_pretrained
from changekit.models.heads.bit_head import BITHead
from changekit.models.registry import register_model

__all__ = ["BiT", "bit_r18"]


class BiT(nn.Module):
    """Siamese ResNet V1c + BiT head; ``forward(t1, t2)`` → logits (B, num_classes, H, W).

    ``pretrained`` loads ImageNet weights into the backbone: ``"imagenet"`` / ``"open-mmlab://resnet18_v1c"``
    (downloaded once through torch.hub), a URL, or a local file in open-mmlab's format.
    """

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 3,
        depth: int = 18,
        num_stages: int = 3,
        strides: tuple[int, ...] = (1, 2, 1),
        dilations: tuple[int, ...] = (1, 1, 1),
        pretrained: str | Path | None = None,
        head: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.backbone = ResNetV1c(
            depth=depth,
            in_channels=in_channels,
            num_stages=num_stages,
            strides=strides,
            dilations=dilations,
            out_indices=(num_stages - 1,),
            contract_dilation=True,
        )
        if pretrained:
            name = (
                "open-mmlab://resnet18_v1c" if str(pretrained) == "imagenet" and depth == 18 else pretrained
            )
            load_resnet_pretrained(self.backbone, name)
        head_args = {
            "in_channels": self.backbone.out_channels[-1],
            "num_classes": num_classes,
            **(head or {}),
        }
        self.decode_head = BITHead(**head_args)

    def extract_features(self, t1: torch.Tensor, t2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each date's last backbone stage (B, 256, H/8, W/8), shared weights."""
        return self.backbone(t1)[-1], self.backbone(t2)[-1]

    def forward_decoder(self, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        """The head's raw logits (input resolution for sides that are multiples of 8)."""
        return self.decode_head(*self.extract_features(t1, t2))

    def forward(self, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        out = self.forward_decoder(t1, t2)
        if out.shape[-2:] != t1.shape[-2:]:
            out = F.interpolate(out, size=t1.shape[-2:], mode="bilinear", align_corners=False)
        return out


@register_model
def bit_r18(
    num_classes: int = 2, in_channels: int = 3, pretrained: str | Path | None = None, **kwargs: Any
) -> BiT:
    """BiT with a ResNet-18 V1c backbone, open-cd's ``bit_r18_256x256_40k_levircd`` (2.99 M parameters).

    ``pretrained``: backbone ImageNet weights (None, ``"imagenet"``, ``"open-mmlab://resnet18_v1c"``, a URL or a
    local file); ``head``: overrides of :class:`~changekit.models.heads.bit_head.BITHead` arguments.
    """
    return BiT(num_classes=num_classes, in_channels=in_channels, depth=18, pretrained=pretrained, **kwargs)
