"""The August 2024 DSQNet head (``dsqnet-2408_*``): QinZelin/DSQNet ``opencd/models/decode_heads/DSQNet.py`` at 8f19920 (2024-08-27).

That upload (identical to ``opencd/DSQNet.py``, 99dc10a) is the last code the authors published and the one whose
query combination and offset sampler the paper's Fig. 2b draws. It replaced the May 2024 head (:mod:`.head`, which
the released configs and checkpoints use) but cannot run with the released configs; no checkpoint was published
for it. Everything below is that code's computation, quirks included, so that weights trained with it load and
behave the same:

* **Query combination** (``key_generation``): ``d = mean_c(Q1 − Q2)`` added to both 64-channel query maps, a shared
  ConvModule 1×1 (64 → 32, BN, ReLU), 2×2 average pooling, concat, ConvModule 1×1 (64 → 32, BN, **ReLU**), read as
  32 boxes (cx, cy, w, h) of 4 cells each after a sigmoid. The ReLU before the sigmoid keeps every value ≥ 0.5.
* **BMQ**: for each box, RoIAlign 7×7 of the *other* date's 1/4 map, a point network (``point1`` Conv1×1 + ReLU,
  ``point2`` MLP 49·8 → 64 → 128 → 32 whose last layer starts at zero: all 16 points on the RoI centre) picks 4×4
  samples (``grid_sample``), then ``.view(B, c, K, 4, 4)`` of a (B·K, c, 4, 4) tensor — a reshape without permute,
  so with c = K = 32 the axis named "channel" indexes windows — bilinear ×2, mean-descriptor outer product per first
  axis, softmax matching both ways, bilinear resize of the (B, c, K, 64) result to the 1/4 map, added as a residual.
* After BMQ: shared ConvModule 1×1, FDAF, concat, Dropout2d 0.1, 1×1 classifier. The MixFFN ``discriminator`` and
  the ``regions_cor`` / ``regions_cor2`` convs are built but never called (their call sites are commented out);
  they are built here too so that parameter counts and checkpoints match the released build.

Two settings make it run where the upload cannot (docs/models_dsqnet.md, "Which DSQNet is the paper's"):

* ``channels = 64``: the upload only fits together at that width (``CFP`` hard-codes a 64-channel query map and
  ``key_generation`` takes ``channels`` in); the shipped configs' 128 crashes.
* 2×2 pooling follows the map: the upload pools with a fixed window ``img_size // 64`` and hard-codes
  ``img_size = 256`` for it, so it runs on 256² only; the configs' ``img_size = 512`` gives window 8 at 512². Pooling
  to 2×2 cells (:func:`~changekit.models.dsqnet.blocks.pool2x2`) is exactly both at their sizes and also runs on
  other sizes (bins overlap by one cell when the 1/32 map has an odd side).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import roi_align

from changekit.models.dsqnet.blocks import DSP, FDAF, ConvModule, MixFFN, cxcywh_to_xyxy, pool2x2

__all__ = ["KeyGeneration", "DSQNetHead2408"]


class KeyGeneration(nn.Module):
    """Released ``key_generation``: two query maps → (B, K, 4) raw box parameters (before the sigmoid)."""

    def __init__(self, in_channels: int, window_nums: int = 32) -> None:
        super().__init__()
        self.window_nums = window_nums
        self.query_bias_conv = ConvModule(in_channels, window_nums)
        self.query_key_conv = ConvModule(2 * window_nums, window_nums)  # mmcv default act: the ReLU before sigmoid

    def forward(self, q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
        d = (q1 - q2).mean(1, keepdim=True)
        k1 = pool2x2(self.query_bias_conv(q1 + d))
        k2 = pool2x2(self.query_bias_conv(q2 + d))
        return self.query_key_conv(torch.cat([k1, k2], 1)).reshape(q1.shape[0], self.window_nums, 4)


class DSQNetHead2408(nn.Module):
    """DSP per date → key generation → BMQ → ConvModule → FDAF → classifier, as released (1/4-resolution logits)."""

    roi_size, points = 7, 4

    def __init__(self, in_channels: Sequence[int], channels: int = 64, num_classes: int = 2, window_nums: int = 32,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if channels != 64:
            raise ValueError(f"the released DSQNet head runs only with channels=64 (got {channels}); "
                             "use dsqnet_* (the May 2024 head) or dsqnet-cx_* for other widths")
        self.channels, self.c, self.window_nums = channels, channels // 2, window_nums
        self.neck_layer = FDAF(self.c)
        self.discriminator = MixFFN(channels, channels)  # built, never called (as released)
        self.key_generation = KeyGeneration(channels, window_nums)
        self.point1 = nn.Sequential(nn.Conv2d(self.c, channels // 8, 1), nn.ReLU())
        self.point2 = nn.Sequential(
            nn.Linear(channels // 8 * self.roi_size ** 2, 64), nn.ReLU(), nn.Linear(64, 128), nn.ReLU(),
            nn.Linear(128, 2 * self.points ** 2),
        )
        nn.init.zeros_(self.point2[-1].weight)  # released: every sampling point starts on the RoI centre
        nn.init.zeros_(self.point2[-1].bias)
        self.norm_conv = ConvModule(self.c, self.c)
        self.CFP = DSP(in_channels, 64)
        self.regions_cor = nn.Conv2d(self.c, self.c, 1)  # built, never called (as released)
        self.regions_cor2 = nn.Conv2d(self.c, self.c, 1)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0, 0.01)  # mmseg BaseDecodeHead.init_weights
        nn.init.zeros_(self.conv_seg.bias)

    def sample(self, feat: torch.Tensor, boxes_xyxy: torch.Tensor) -> torch.Tensor:
        """RoIAlign + learned 4×4 points + the released reshapes: (B, c, K, 64), axes as the upload names them."""
        b, c = feat.shape[:2]
        k, p = self.window_nums, self.points
        rois = roi_align(feat, list(boxes_xyxy.unbind(0)), (self.roi_size, self.roi_size), 1.0, aligned=True)
        pts = self.point2(self.point1(rois).reshape(b * k, -1)).view(b * k, p, p, 2).tanh()
        out = F.grid_sample(rois, pts, padding_mode="zeros", align_corners=False)  # (B·K, c, 4, 4)
        out = out.reshape(b, c * k, p, p)  # the upload's .view(b, c, K, 4, 4).view(b, c·K, 4, 4): memory order (K, c)
        out = F.interpolate(out, size=(2 * p, 2 * p), mode="bilinear", align_corners=False)
        return out.flatten(2).view(b, c, k, -1)

    def bmq(self, x1: torch.Tensor, x2: torch.Tensor, query_key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = x1.shape[-2:]
        xyxy = cxcywh_to_xyxy(query_key.sigmoid(), h, w)
        r1 = self.sample(x2, xyxy)  # for date 1, from date 2
        r2 = self.sample(x1, xyxy)
        relevance = r1.mean(3, keepdim=True) @ r2.mean(3, keepdim=True).transpose(2, 3)  # (B, c, K, K)
        r2 = relevance.softmax(3) @ r2
        r1 = relevance.transpose(2, 3).softmax(3) @ r1
        r1 = F.interpolate(r1, size=(h, w), mode="bilinear", align_corners=False)
        r2 = F.interpolate(r2, size=(h, w), mode="bilinear", align_corners=False)
        return x1 + r1, x2 + r2

    def forward(self, feats1: Sequence[torch.Tensor], feats2: Sequence[torch.Tensor], return_boxes: bool = False):
        x1, q1 = self.CFP(feats1)
        x2, q2 = self.CFP(feats2)
        query_key = self.key_generation(q1, q2)
        x1, x2 = self.bmq(x1, x2, query_key)
        x1, x2 = self.neck_layer(self.norm_conv(x1), self.norm_conv(x2))
        out = self.conv_seg(self.dropout(torch.cat([x1, x2], 1)))
        return (out, query_key.sigmoid()) if return_boxes else out
