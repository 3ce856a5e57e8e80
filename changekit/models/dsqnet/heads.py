"""DSQNet decoder pieces: deep-semantics pyramid (DSP/CFP), query-key generation, bidirectional matching query
(BMQ), flow dual-alignment fusion (FDAF), MixFFN projection head. See :mod:`changekit.models.dsqnet.model`.

Widths: ``channels`` is the classifier input width; the per-date feature width is ``c = channels // 2`` and the
deep-semantic (query) width is ``m = channels``. The released HEAD head is ``channels = 64`` (m = 64, c = 32).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import roi_align

__all__ = ["ConvModule", "LMLP", "DSP", "QueryKeyGeneration", "BMQ", "FDAF", "MixFFN", "DSQHead"]


class ConvModule(nn.Sequential):
    """Conv → BN → ReLU (mmcv ``ConvModule`` defaults: no conv bias when a norm follows)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 1, stride: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        if act:
            self.activate = nn.ReLU(inplace=True)


class LMLP(nn.Module):
    """x = Conv1×1(GN(x)) + x; x = GN(x); x = MLP_channel(x) + x (MLP = Linear-ReLU-Linear)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.gn1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.gn2 = nn.GroupNorm(groups, channels)
        self.LLMLP = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.gn1(x)) + x
        x = self.gn2(x).permute(0, 2, 3, 1)
        return (self.LLMLP(x) + x).permute(0, 3, 1, 2)


def _up(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class DSP(nn.Module):
    """Deep-semantics pyramid (the released ``CFP``).

    A deep-semantic map ``s = LMLP(Conv1×1(F4))`` is re-injected into every level of a top-down pyramid
    (``L4 = CM([s, F4])``, ``Li = CM([up(s), up(L(i+1)), Fi])``); returns the 1/4 map (c channels) and the query
    map ``CM1×1(s)`` (m channels, 1/32).
    """

    def __init__(self, in_channels: Sequence[int], m: int) -> None:
        super().__init__()
        self.mlpCov = nn.Conv2d(in_channels[3], m, 1)
        self.MLP = LMLP(m, max(m // 16, 1))
        self.query_bias_conv = ConvModule(m, m)
        self.convs = nn.ModuleList([
            ConvModule(in_channels[0] + 2 * m, m // 2),
            ConvModule(in_channels[1] + 2 * m, m),
            ConvModule(in_channels[2] + 2 * m, m),
            ConvModule(in_channels[3] + m, m),
        ])

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.MLP(self.mlpCov(feats[3]))
        query = self.query_bias_conv(s)
        out = self.convs[3](torch.cat([s, feats[3]], 1))
        for i in (2, 1, 0):
            size = feats[i].shape[-2:]
            out = self.convs[i](torch.cat([_up(s, size), _up(out, size), feats[i]], 1))
        return out, query


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
        k = torch.cat([_pool2x2(self.reduce(q1 + d)), _pool2x2(self.reduce(q2 + d))], 1)
        return self.combine(k).flatten(2).sigmoid()  # (B, K, 4)


def _pool2x2(x: torch.Tensor) -> torch.Tensor:
    """``adaptive_avg_pool2d(x, 2)`` written out: bin ``i`` of a side of length ``n`` averages
    ``[floor(i n / 2), ceil((i + 1) n / 2))``, the same numbers, as slices that ONNX can export (adaptive pooling
    has no ONNX operator)."""
    h, w = x.shape[-2:]
    rows = [(0, (h + 1) // 2), (h // 2, h)]
    cols = [(0, (w + 1) // 2), (w // 2, w)]
    cells = [torch.stack([x[..., r0:r1, c0:c1].mean((-2, -1)) for c0, c1 in cols], -1) for r0, r1 in rows]
    return torch.stack(cells, -2)


def cxcywh_to_xyxy(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    cx, cy, bw, bh = boxes.unbind(-1)
    return torch.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], -1)


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


class FDAF(nn.Module):
    """Flow dual-alignment fusion (Changer): x1' = warp(x1, f1) − x2, x2' = warp(x2, f2) − x1."""

    def __init__(self, c: int, kernel_size: int = 5) -> None:
        super().__init__()
        self.flow_make = nn.Sequential(
            nn.Conv2d(2 * c, 2 * c, kernel_size, padding=kernel_size // 2, groups=2 * c),
            nn.InstanceNorm2d(2 * c), nn.GELU(), nn.Conv2d(2 * c, 4, 1, bias=False),
        )

    @staticmethod
    def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        norm = torch.tensor([w, h], dtype=x.dtype, device=x.device)
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).expand(n, h, w, 2)
        return F.grid_sample(x, grid + flow.permute(0, 2, 3, 1) / norm, align_corners=True)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f1, f2 = self.flow_make(torch.cat([x1, x2], 1)).chunk(2, 1)
        return self.warp(x1, f1) - x2, self.warp(x2, f2) - x1


class MixFFN(nn.Module):
    """SegFormer MixFFN used as Changer's projection head: x + fc2(drop(GELU(dw3×3(fc1(x)))))."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(dim, hidden, 1), nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.GELU(),
            nn.Dropout(0.0), nn.Conv2d(hidden, dim, 1), nn.Dropout(0.0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class DSQHead(nn.Module):
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
