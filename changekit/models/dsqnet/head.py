"""The DSQNet head of the released configs and checkpoints: QinZelin/DSQNet ``opencd/models/decode_heads/DSQNet.py``
as of c9ed32b (2024-05-12; the same code as ``BMQNet.py`` at 9f703b7, 2024-05-06, under its first name).

Why this version: it is the head in the repository when the configs ``configs/DSQNet/DSQNet_*`` were added (8269264,
2024-05-12) and when the trained checkpoints were linked in the README (4bda99b, 2024-05-13: LEVIR-CD F1 92.01 /
92.37, S2Looking 66.69 / 67.08; the same links stay until 2025); and it is the only released head that runs with
those configs as shipped (``channels = 128``, ``img_size = 512``). The later upload (8f19920, 2024-08-27) is
:mod:`.head_2408`.

Computation, as released:

* DSP (``CFP``) with a 128-channel deep-semantic map; its query map goes through ``query_bias_conv`` (ConvModule
  1×1) and ``query_bias_pool`` (ConvModule 8×8, stride 8, BN, ReLU) to a 2×2 grid: 128 query vectors of 4 numbers.
* Boxes per date: ``sigmoid(reference_areaN + query_N)`` with a learned ``nn.Embedding(128, 4)`` per date (cx, cy,
  w, h in [0, 1]); the ReLU of the pooling conv comes before the sigmoid, as released.
* BMQ: for date 1's boxes, RoIAlign 3×3 of date 2's 1/4 map, a point network (``point1`` Conv1×1 c → channels/8 +
  ReLU, ``point2`` MLP 9·channels/8 → 64 → 128 → 2, last layer zero-initialised: the point starts on the RoI
  centre) picks one sample per box (``grid_sample``, tanh); the 128 samples are laid out on an 8×16 grid in box
  order, resized to the 1/4 map and added to date 1. The same for date 2 with its own boxes and date 1's map.
* Shared ConvModule 1×1 per date, FDAF, concat, MixFFN projection head, Dropout2d 0.1, 1×1 classifier (1/4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import roi_align

from changekit.models.dsqnet.blocks import DSP, FDAF, ConvModule, MixFFN, cxcywh_to_xyxy

__all__ = ["DSQNetHead"]


class DSQNetHead(nn.Module):
    """DSP per date → learned + predicted boxes → BMQ → ConvModule → FDAF → MixFFN → classifier, as released."""

    roi_size = 3

    def __init__(self, in_channels: Sequence[int], channels: int = 128, num_classes: int = 2, img_size: int = 512,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if img_size % 64 or channels % 16:
            raise ValueError(f"DSQNet needs img_size a multiple of 64 and channels a multiple of 16 "
                             f"(got img_size={img_size}, channels={channels})")
        self.channels, self.c = channels, channels // 2
        self.change_areas = channels  # one box per query channel: 128 with the released width
        self.neck_layer = FDAF(self.c)
        self.discriminator = MixFFN(channels, channels)
        self.reference_area1 = nn.Embedding(self.change_areas, 4)
        self.reference_area2 = nn.Embedding(self.change_areas, 4)
        self.point1 = nn.Sequential(nn.Conv2d(self.c, channels // 8, 1), nn.ReLU())
        self.point2 = nn.Sequential(
            nn.Linear(channels // 8 * self.roi_size ** 2, 64), nn.ReLU(), nn.Linear(64, 128), nn.ReLU(),
            nn.Linear(128, 2),
        )
        nn.init.zeros_(self.point2[-1].weight)  # released: each box's point starts on the RoI centre
        nn.init.zeros_(self.point2[-1].bias)
        self.norm_conv = ConvModule(self.c, self.c)
        self.CFP = DSP(in_channels, channels, query_pool=img_size // 64)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0, 0.01)  # mmseg BaseDecodeHead.init_weights
        nn.init.zeros_(self.conv_seg.bias)

    def boxes(self, reference: nn.Embedding, query: torch.Tensor) -> torch.Tensor:
        """(B, K, 4) boxes (cx, cy, w, h) in [0, 1]: learned position + predicted offset, then sigmoid."""
        return (reference.weight.unsqueeze(0) + query.reshape(query.shape[0], self.change_areas, 4)).sigmoid()

    def inject(self, x: torch.Tensor, other: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``x`` + one learned sample of ``other`` per box, laid out on a (K/16)×16 grid and resized to ``x``."""
        b, c, h, w = x.shape
        k = self.change_areas
        rois = roi_align(other, list(cxcywh_to_xyxy(boxes, h, w).unbind(0)), (self.roi_size, self.roi_size), 1.0,
                         aligned=True)
        pts = self.point2(self.point1(rois).reshape(b * k, -1)).view(b * k, 1, 1, 2).tanh()
        sampled = F.grid_sample(rois, pts, padding_mode="zeros", align_corners=False).view(b, k, c)
        grid = sampled.permute(0, 2, 1).reshape(b, c, k // 16, 16)
        return x + F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)

    def forward(self, feats1: Sequence[torch.Tensor], feats2: Sequence[torch.Tensor], return_boxes: bool = False):
        x1, q1 = self.CFP(feats1)
        x2, q2 = self.CFP(feats2)
        boxes1, boxes2 = self.boxes(self.reference_area1, q1), self.boxes(self.reference_area2, q2)
        x1, x2 = self.inject(x1, x2, boxes1), self.inject(x2, x1, boxes2)
        x1, x2 = self.neck_layer(self.norm_conv(x1), self.norm_conv(x2))
        out = self.conv_seg(self.dropout(self.discriminator(torch.cat([x1, x2], 1))))
        return (out, torch.stack([boxes1, boxes2], 1)) if return_boxes else out
