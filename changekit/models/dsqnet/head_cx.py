"""changekit's DSQNet head design (``dsqnet-cx_*``): query-key generation without the box ReLU, a BMQ that keeps
windows and channels apart and pastes matched windows back into their boxes, spread sampling-point initialisation,
MixFFN applied, configurable width. Not the paper's code: see :mod:`changekit.models.dsqnet.model` for the released
head and docs/models_dsqnet.md for why each departure was made.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import roi_align

from changekit.models.dsqnet.blocks import DSP, FDAF, ConvModule, MixFFN, cxcywh_to_xyxy, pool2x2

__all__ = ["QueryKeyGeneration", "BMQ", "DSQHeadCX"]


class QueryKeyGeneration(nn.Module):
    """Difference-aware query combination → K boxes (cx, cy, w, h) in [0, 1].

    ``d = mean_c(Q1 − Q2)`` is added to both query maps; each goes through a shared CM1×1(m→c) and is average-pooled
    to a 2×2 grid (adaptive: the pooling window follows the map size, 4×4 cells at 256 input, 8×8 at 512, 4×6 at
    256×384); the two are concatenated and a 1×1 conv + BN gives K channels whose four cells are read as one box
    each, after a sigmoid. The released code also puts a ReLU before the sigmoid, which confines every box to the
    lower-right quadrant with sides ≥ half the map; ``released_relu=True`` restores it.
    """

    def __init__(self, m: int, c: int, num_boxes: int = 32, released_relu: bool = False) -> None:
        super().__init__()
        self.reduce = ConvModule(m, c)
        self.combine = ConvModule(2 * c, num_boxes, act=released_relu)
        self.num_boxes = num_boxes

    def forward(self, q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
        d = (q1 - q2).mean(1, keepdim=True)
        k = torch.cat([pool2x2(self.reduce(q1 + d)), pool2x2(self.reduce(q2 + d))], 1)
        return self.combine(k).flatten(2).sigmoid()  # (B, K, 4)


class BMQ(nn.Module):
    """Bidirectional matching query.

    For every box k: ``R1_k = RoIAlign(x2, box_k)`` and ``R2_k = RoIAlign(x1, box_k)`` (7×7, aligned); a small
    network (``point1``: Conv1×1 c→channels/8 + ReLU; ``point2``: MLP 49·channels/8 → 64 → 128 → 2·P²) predicts P×P
    sampling points inside the RoI (tanh), read with ``grid_sample`` (learned deformable sampling). Each window is
    summarised by the mean of its points; windows are matched across dates by the scaled dot product of these
    channel descriptors (a K×K affinity A = d1·d2ᵀ/√c): ``R2 ← softmax(A) R2`` and ``R1 ← softmax(Aᵀ) R1`` (both
    directions). The refined windows are pasted back into their boxes on the 1/4 map (bilinear, averaged where
    boxes overlap) and added: ``x1 + R1`` (content from date 2), ``x2 + R2`` (content from date 1).
    """

    def __init__(self, c: int, channels: int, roi_size: int = 7, points: int = 4) -> None:
        super().__init__()
        self.c, self.roi_size, self.points = c, roi_size, points
        hidden = max(channels // 8, 1)
        self.point1 = nn.Sequential(nn.Conv2d(c, hidden, 1), nn.ReLU())
        self.point2 = nn.Sequential(
            nn.Linear(hidden * roi_size * roi_size, 64), nn.ReLU(), nn.Linear(64, 128), nn.ReLU(),
            nn.Linear(128, 2 * points * points),
        )
        # zero weights as released; the bias starts the points on a regular P×P grid of the RoI (the released
        # zero bias puts all P² points on the RoI centre, so every sample is the same until the weights move)
        nn.init.zeros_(self.point2[-1].weight)
        with torch.no_grad():
            g = (torch.arange(points, dtype=torch.float32) + 0.5) / points * 2 - 1
            gy, gx = torch.meshgrid(g, g, indexing="ij")
            self.point2[-1].bias.copy_(torch.atanh(torch.stack([gx, gy], -1).flatten()))

    def sample(self, feat: torch.Tensor, boxes_xyxy: torch.Tensor) -> torch.Tensor:
        """RoIAlign ``feat`` at the boxes and read P×P learned points: (B, K, c, P²)."""
        b, k = boxes_xyxy.shape[:2]
        rois = roi_align(feat, list(boxes_xyxy.unbind(0)), (self.roi_size, self.roi_size), 1.0, aligned=True)
        pts = self.point2(self.point1(rois).flatten(1)).view(b * k, self.points, self.points, 2).tanh()
        out = F.grid_sample(rois, pts, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.view(b, k, self.c, self.points * self.points)

    def paste(self, windows: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Paste (B, K, c, P²) windows into their boxes (normalised cxcywh) on an h×w map, averaging overlaps.

        Each P×P window is resampled bilinearly over its box (the same weights as ``grid_sample`` with
        ``align_corners=False`` and zero padding), written as two separable weight matrices so that the sum over
        boxes is one batched matrix product.
        """
        b, k, c, _ = windows.shape
        h, w = size
        p = self.points
        patches = windows.view(b, k, c, p, p)
        ys = (torch.arange(h, device=boxes.device, dtype=boxes.dtype) + 0.5) / h
        xs = (torch.arange(w, device=boxes.device, dtype=boxes.dtype) + 0.5) / w
        cx, cy, bw, bh = (t[..., None] for t in boxes.unbind(-1))  # (B, K, 1)
        u = (xs - cx) / (bw.clamp_min(1e-6) / 2)  # (B, K, w): position inside box k, [-1, 1] inside
        v = (ys - cy) / (bh.clamp_min(1e-6) / 2)  # (B, K, h)
        cells = torch.arange(p, device=boxes.device, dtype=boxes.dtype)
        wx = (1 - (((u + 1) * p - 1) / 2)[..., None].sub(cells).abs()).clamp_min(0)  # (B, K, w, P)
        wy = (1 - (((v + 1) * p - 1) / 2)[..., None].sub(cells).abs()).clamp_min(0)  # (B, K, h, P)
        rows = torch.einsum("bkcpq,bkxq->bkcpx", patches, wx.to(patches.dtype))
        out = torch.einsum("bkyp,bkcpx->bcyx", wy.to(patches.dtype), rows)
        with torch.no_grad():
            inside = torch.einsum("bky,bkx->byx", (v.abs() <= 1).to(out.dtype), (u.abs() <= 1).to(out.dtype))
        return out / inside.clamp_min(1).unsqueeze(1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = x1.shape[-2:]
        xyxy = cxcywh_to_xyxy(boxes, h, w)
        r1 = self.sample(x2, xyxy)  # date-2 content in each box, for date 1
        r2 = self.sample(x1, xyxy)  # date-1 content in each box, for date 2
        d1, d2 = r1.mean(-1), r2.mean(-1)  # (B, K, c) window descriptors
        affinity = d1 @ d2.transpose(1, 2) / math.sqrt(self.c)  # (B, K, K)
        k = r1.shape[1]
        r2 = (affinity.softmax(-1) @ r2.flatten(2)).view_as(r2)
        r1 = (affinity.transpose(1, 2).softmax(-1) @ r1.flatten(2)).view(r1.shape[0], k, self.c, -1)
        return x1 + self.paste(r1, boxes, (h, w)), x2 + self.paste(r2, boxes, (h, w))


class DSQHeadCX(nn.Module):
    """DSP per date → query-key generation → BMQ → 1×1 projection → FDAF → MixFFN → classifier (1/4 resolution)."""

    def __init__(self, in_channels: Sequence[int], channels: int = 64, num_classes: int = 2, num_boxes: int = 32,
                 roi_size: int = 7, points: int = 4, dropout: float = 0.1, released_box_relu: bool = False) -> None:
        super().__init__()
        self.channels, self.c = channels, channels // 2
        self.CFP = DSP(in_channels, channels)
        self.key_generation = QueryKeyGeneration(channels, self.c, num_boxes, released_box_relu)
        self.bmq = BMQ(self.c, channels, roi_size, points)
        self.norm_conv = ConvModule(self.c, self.c)
        self.neck_layer = FDAF(self.c)
        self.discriminator = MixFFN(channels, channels)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats1: Sequence[torch.Tensor], feats2: Sequence[torch.Tensor], return_boxes: bool = False):
        x1, q1 = self.CFP(feats1)
        x2, q2 = self.CFP(feats2)
        boxes = self.key_generation(q1, q2)
        x1, x2 = self.bmq(x1, x2, boxes)
        x1, x2 = self.neck_layer(self.norm_conv(x1), self.norm_conv(x2))
        out = self.conv_seg(self.dropout(self.discriminator(torch.cat([x1, x2], 1))))
        return (out, boxes) if return_boxes else out
