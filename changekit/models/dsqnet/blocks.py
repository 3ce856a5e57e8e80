"""DSQNet building blocks shared by the released head (:mod:`.head`) and changekit's design (:mod:`.head_cx`):
mmcv-style ``ConvModule``, the deep-semantics pyramid (DSP, released name ``CFP``) with its ``LMLP``, flow
dual-alignment fusion (FDAF, from Changer), the MixFFN projection head, 2×2 pooling and box conversion.

Parameter names follow the released code (``CFP.mlpCov``, ``CFP.MLP.LLMLP``, ``neck_layer.flow_make`` …) so released
checkpoints load key for key.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ConvModule", "LMLP", "DSP", "FDAF", "MixFFN", "pool2x2", "cxcywh_to_xyxy"]


class ConvModule(nn.Sequential):
    """Conv → BN → ReLU (mmcv ``ConvModule`` defaults: no padding, no conv bias when a norm follows)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 1, stride: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, bias=False)
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

    ``query_pool = k`` adds the May 2024 head's ``query_bias_pool``: a ConvModule k×k, stride k, on the query map,
    with k = img_size / 64 (8 for the configs' 512), giving a 2×2 grid. Its weights fix k, so a 1/32 map of another
    side than 2k is first resized to 2k × 2k (bilinear; nothing changes at the trained size).
    """

    def __init__(self, in_channels: Sequence[int], m: int, query_pool: int = 0) -> None:
        super().__init__()
        self.mlpCov = nn.Conv2d(in_channels[3], m, 1)
        self.MLP = LMLP(m, max(m // 16, 1))
        self.query_pool = query_pool
        if query_pool:
            self.query_bias_pool = ConvModule(m, m, query_pool, query_pool)
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
        if self.query_pool:
            side = 2 * self.query_pool
            if tuple(query.shape[-2:]) != (side, side):
                query = _up(query, (side, side))
            query = self.query_bias_pool(query)
        out = self.convs[3](torch.cat([s, feats[3]], 1))
        for i in (2, 1, 0):
            size = feats[i].shape[-2:]
            out = self.convs[i](torch.cat([_up(s, size), _up(out, size), feats[i]], 1))
        return out, query


def pool2x2(x: torch.Tensor) -> torch.Tensor:
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
