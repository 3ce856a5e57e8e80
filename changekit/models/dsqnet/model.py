"""DSQNet (Qin & Zhang, "Deep Semantic-Query Network for Change Detection", IEEE GRSL 2024), as the paper describes it.

Siamese backbone (Swin-T or ViTAEv2-S, four stages) → deep-semantics pyramid (DSP) per date → query-key
generation (difference-aware, K = 32 boxes) → bidirectional matching query (BMQ: RoIAlign of the *other* date's
1/4 features in each box, learned sampling points, window matching in both directions, residual injection at 1/4)
→ shared 1×1 projection → flow dual-alignment fusion (FDAF) → MixFFN projection head → 1×1 classifier at 1/4,
upsampled to the input. Trained with cross-entropy + OHEM (thresh 0.7, min_kept 100000).

Design = the released HEAD head (2024-08-27), whose query combination and offset sampler match the paper's
figure. Departures from the released code, and why:

1. **No hard-coded image size.** The released ``key_generation`` pools with a fixed 4×4 window and reshapes to
   ``(B, 32, 4)``, so it runs only on 256×256 inputs (the configs crop and slide 512). We pool adaptively to the
   2×2 grid the design intends, so 256, 512 and non-square inputs (256×384) work.
2. **Channel and window axes kept apart in BMQ.** The released ``.view(B, c, K, 4, 4)`` reshapes a (B·K, c, …)
   tensor without a permute, so with c = K = 32 the axis named "channel" indexes windows and vice versa; its
   "matching" then mixes channels inside each window and the residual is a resized image whose channels are
   windows. We keep windows as tokens: each window's sampled points are averaged into a c-dim descriptor, the K
   windows of the two dates are matched by a scaled dot product (K×K affinity, softmax; date-1 windows take
   matched date-2 content and vice versa), and the refined windows are pasted back into their own boxes.
3. **Box activation.** The released head applies ReLU before the box sigmoid, so every box centre lies in the
   lower-right quadrant and every side is at least half the map. We use conv + BN + sigmoid so boxes can lie
   anywhere (``released_box_relu=True`` restores the released behaviour).
4. **Sampling-point initialisation.** The released offset MLP's last layer is zero-initialised (weights and
   bias), which puts all 4×4 points on the RoI centre. We keep zero weights but start the bias on a regular 4×4
   grid of the RoI, so the points begin spread over the box.
5. **Projection head applied.** HEAD builds the MixFFN projection head but leaves its call commented out; the
   paper's pipeline has it (FDAF → projection head → mask), so we apply it.
6. **Width.** The HEAD code's only runnable width is ``channels = 64`` (the shipped configs say 128 and crash);
   with it the totals are 27.76 M / 19.03 M, 5.9 % and 3.9 % under the published 29.5 M / 19.8 M. We use
   ``channels = 192`` for both backbones (query width 192, per-date width 96, still K = 32 boxes): 28.51 M
   (Swin-T, −3.4 %) and 19.70 M (ViTAEv2-S, −0.5 %). ``channels`` is an argument.
7. The 4×4 → 8×8 bilinear upsampling of the sampled windows before matching is dropped (it only interpolates
   the 16 samples; the descriptors are means).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from changekit.models.backbones.swin import SwinTransformer, load_swin_pretrained
from changekit.models.backbones.vitae import ViTAEv2, load_vitae_pretrained
from changekit.models.dsqnet.heads import DSQHead
from changekit.models.registry import register_model

__all__ = ["DSQNet", "dsqnet_swin_t", "dsqnet_vitaev2_s"]


class DSQNet(nn.Module):
    """Backbone shared by both dates + :class:`~changekit.models.dsqnet.heads.DSQHead`."""

    def __init__(self, backbone: nn.Module, channels: int = 64, num_classes: int = 2, in_channels: int = 3,
                 **head_kwargs: Any) -> None:
        super().__init__()
        self.num_classes, self.in_channels = num_classes, in_channels
        self.backbone = backbone
        self.decode_head = DSQHead(backbone.out_channels, channels, num_classes, **head_kwargs)

    def forward_decoder(self, t1: torch.Tensor, t2: torch.Tensor, return_boxes: bool = False):
        """Raw logits at 1/4 of the input (and the (B, K, 4) boxes if asked)."""
        return self.decode_head(self.backbone(t1), self.backbone(t2), return_boxes=return_boxes)

    def forward(self, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        out = self.forward_decoder(t1, t2)
        return F.interpolate(out, size=t1.shape[-2:], mode="bilinear", align_corners=False)


def _swin(in_channels: int, drop_path_rate: float, backbone_weights: str | Path | None, **kw) -> SwinTransformer:
    cfg = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7)
    cfg.update(kw)
    m = SwinTransformer(in_chans=in_channels, drop_path_rate=drop_path_rate, **cfg)
    if backbone_weights:
        load_swin_pretrained(m, backbone_weights)
    return m


def _vitae(in_channels: int, drop_path_rate: float, backbone_weights: str | Path | None, **kw) -> ViTAEv2:
    m = ViTAEv2(in_chans=in_channels, drop_path_rate=drop_path_rate, **kw)
    if backbone_weights:
        load_vitae_pretrained(m, backbone_weights)
    return m


@register_model(name="dsqnet_swin-t")
def dsqnet_swin_t(num_classes: int = 2, in_channels: int = 3, channels: int = 192, drop_path_rate: float = 0.3,
                  backbone_weights: str | Path | None = None, backbone_args: dict | None = None,
                  **head_kwargs: Any) -> DSQNet:
    """DSQNet with Swin-T. ``backbone_weights``: official or mmseg ImageNet Swin-T file (never downloaded).

    ``backbone_args`` overrides Swin settings (e.g. ``depths`` for a reduced test model).
    """
    bb = _swin(in_channels, drop_path_rate, backbone_weights, **(backbone_args or {}))
    return DSQNet(bb, channels, num_classes, in_channels, **head_kwargs)


@register_model(name="dsqnet_vitaev2-s")
def dsqnet_vitaev2_s(num_classes: int = 2, in_channels: int = 3, channels: int = 192, drop_path_rate: float = 0.3,
                     backbone_weights: str | Path | None = None, backbone_args: dict | None = None,
                     **head_kwargs: Any) -> DSQNet:
    """DSQNet with ViTAEv2-S (window, no shift). ``backbone_weights``: the official ``ViTAEv2-S.pth.tar``."""
    bb = _vitae(in_channels, drop_path_rate, backbone_weights, **(backbone_args or {}))
    return DSQNet(bb, channels, num_classes, in_channels, **head_kwargs)
