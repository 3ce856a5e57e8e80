"""CLIPFormer's decoding side: the per-scale fusion streams (FPN, the ChangeFormer-style difference decoder,
squeeze-excitation merge) and the text-guided CSWin decoder ("VLGT", ``CSwinTextDecode`` in the released code).

The CSWin decoder:

Four UNet-like upsampling stages. Each stage upsamples its input ×2 (nearest, 3×3 conv, GroupNorm 32, ReLU)
to ``channels/2``, then runs one block:

* cross-attention from every image token to the four text tokens (background/foreground of both dates,
  each projected to ``channels/2``): ``x += Dropout(Linear(softmax(q kᵀ/√d_k) v))`` with q from the
  image, k and v from the text (``d_k = channels/4``, ``d_v = channels``);
* cross-shaped-window self-attention: half of the channels attend inside vertical stripes (full height ×
  ``split_size``), the other half inside horizontal stripes, each with LePE (a depthwise 3×3 conv on V added
  to the attention output); the normalised input is added back before the output projection (as released);
  then an MLP (ratio 4, GELU); both residuals go through DropPath;

a 1×1 conv + ReLU, and concatenation with the skip (1×1 conv + ReLU to ``channels/2``) followed by a 3×3
conv + ReLU back to ``channels``. Inputs are ``[e1 (1/4), e2 (1/8), e3 (1/16), e4 (1/32), e5 (1/2)]``; the
stages produce 1/16, 1/8, 1/4 and 1/2 maps; the classifier (Dropout2d + 1×1 conv) gives logits at 1/2.

Module names follow the released code (``layer1..4``, ``up.blk.low_rank_bilinear.WQ``, ``attns``, ``get_v``,
``linearA/B``, ``conv_seg``) so that its checkpoints map one to one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from changekit.models.cswin import CSWinBlock, LePEAttention

__all__ = ["CSwinTextHead", "CSwinTextBlock", "LePEAttention", "FPN", "ConvAct", "DifferenceDecoder", "SELayerV2"]


# ----------------------------------------------------------------------------- fusion streams
def make_divisible(value: float, divisor: int = 8, min_ratio: float = 0.9) -> int:
    """mmcv's ``make_divisible`` (used by the SE layer's squeeze width)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < min_ratio * value else new


class ConvAct(nn.Module):
    """mmcv ``ConvModule`` without norm: conv (with bias) + optional activation; key ``conv.*``."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 1, act: nn.Module | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2)
        self.act = act if act is not None else nn.Identity()
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")  # mmcv ConvModule init
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class HSigmoid(nn.Module):
    """mmcv ``HSigmoid(bias=3, divisor=6)``: ``clamp((x + 3) / 6, 0, 1)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 3.0) / 6.0).clamp_(0.0, 1.0)


class SELayerV2(nn.Module):
    """ChangeCLIP's ``SELayer_v2``: squeeze-excitation reweighting, then a 1×1 conv + ReLU to ``out_channels``."""

    def __init__(self, channels: int, out_channels: int, ratio: int = 16) -> None:
        super().__init__()
        mid = make_divisible(channels // ratio, 8)
        self.conv1 = ConvAct(channels, mid, 1, nn.ReLU(inplace=True))
        self.conv2 = ConvAct(mid, channels, 1, HSigmoid())
        self.conv_last = ConvAct(channels, out_channels, 1, nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.conv2(self.conv1(F.adaptive_avg_pool2d(x, 1)))
        return self.conv_last(x * w)


class FPN(nn.Module):
    """mmseg ``FPN`` (no norm, no activation, nearest top-down, ``num_outs == len(in_channels)``)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.lateral_convs = nn.ModuleList([ConvAct(c, out_channels, 1) for c in in_channels])
        self.fpn_convs = nn.ModuleList([ConvAct(out_channels, out_channels, 3) for _ in in_channels])
        for m in self.modules():  # mmseg FPN: xavier_init(uniform) on its convs
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        lat = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="nearest")
        return [conv(x) for conv, x in zip(self.fpn_convs, lat)]


class _ConvLayer(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size: int, padding: int) -> None:
        super().__init__()
        self.conv2d = nn.Conv2d(cin, cout, kernel_size, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(x)


class ResidualBlock(nn.Module):
    """ChangeFormer's ``ResidualBlock`` (undefined in the released CLIPFormer): ``x + 0.1·conv(relu(conv(x)))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _ConvLayer(channels, channels, 3, 1)
        self.conv2 = _ConvLayer(channels, channels, 3, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x))) * 0.1


class _UpsampleConv(nn.Module):
    def __init__(self, channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.conv2d = nn.ConvTranspose2d(channels, channels, kernel_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(x)


class _TokenLinear(nn.Module):
    """ChangeFormer's ``MLP``: a per-pixel Linear, kept as a Linear so the key is ``proj.weight``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _conv_diff(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU()
    )


class DifferenceDecoder(nn.Module):
    """``get_optimal_dist``: ChangeFormer's DecoderTransformer_v3 difference pyramid.

    Returns ``[D0 (1/2), D1 (1/4), D2 (1/8), D3 (1/16), D4 (1/32)]`` (the released code's reversed list).
    """

    def __init__(self, in_channels: Sequence[int], dim: int = 256) -> None:
        super().__init__()
        for i, c in enumerate(in_channels, start=1):
            setattr(self, f"linear_c{i}", _TokenLinear(c, dim))
            setattr(self, f"diff_c{i}", _conv_diff(2 * dim, dim))
        self.linear_fuse = nn.Sequential(nn.Conv2d(4 * dim, dim, 1), nn.BatchNorm2d(dim))
        self.convd2x = _UpsampleConv(dim, 2, 2)
        self.dense_2x = nn.Sequential(ResidualBlock(dim))
        self.convd1x = _UpsampleConv(dim, 1, 1)
        self.dense_1x = nn.Sequential(ResidualBlock(dim))

    def forward(self, feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        size1 = feats_a[0].shape[-2:]
        diffs: list[torch.Tensor] = []
        prev = None
        for i in (4, 3, 2, 1):
            lin = getattr(self, f"linear_c{i}")
            d = getattr(self, f"diff_c{i}")(torch.cat([lin(feats_a[i - 1]), lin(feats_b[i - 1])], dim=1))
            if prev is not None:
                d = d + F.interpolate(prev, size=d.shape[-2:], mode="bilinear", align_corners=False)
            diffs.append(d)
            prev = d
        ups = [F.interpolate(d, size=size1, mode="bilinear", align_corners=False) for d in diffs[:3]]
        c = self.linear_fuse(torch.cat([*ups, diffs[3]], dim=1))
        c0 = self.dense_1x(self.convd1x(self.dense_2x(self.convd2x(c))))
        return [c0, *diffs[::-1]]


# --------------------------------------------------------------------------------------------- the model
# ----------------------------------------------------------------------------- text-guided CSWin decoder
class LowRankBilinearAttention(nn.Module):
    """Image tokens (queries) attend to text tokens (keys and values)."""

    def __init__(self, d_model: int = 128, d_k: int = 64, d_v: int = 256) -> None:
        super().__init__()
        self.WQ = nn.Linear(d_model, d_k)
        self.WK = nn.Linear(d_model, d_k)
        self.WV = nn.Linear(d_model, d_v)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(self.WQ(x), self.WK(text), self.WV(text))


class CSwinTextBlock(CSWinBlock):
    """Text cross-attention followed by a CSWin block (``CrossShapedGLAttention`` in the released code).

    The shared :class:`~changekit.models.cswin.CSWinBlock`, with its attention projection named ``projattn``
    (``proj`` projects the text attention here, as released)."""

    proj_name = "projattn"

    def __init__(
        self,
        dim: int,
        num_heads: int,
        split_size: int,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.1,
        d_k: int | None = None,
        d_v: int | None = None,
    ) -> None:
        super().__init__(dim, num_heads, split_size, mlp_ratio, drop, attn_drop, drop_path)
        d_k = d_k or dim // 2
        d_v = d_v or dim * 2
        self.low_rank_bilinear = LowRankBilinearAttention(dim, d_k, d_v)
        self.proj = nn.Linear(d_v, dim)
        self.proj_drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], text: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``x`` (B, H·W, C) image tokens, ``text`` (B, T, C) → (B, H·W, C)."""
        x = x + self.proj_drop(self.proj(self.low_rank_bilinear(x, text)))
        return super().forward(x, hw)


class _UpConv(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(cin, cout, kernel_size=3, padding=1),
            nn.GroupNorm(num_groups=min(32, cout), num_channels=cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class _UpBlock(nn.Module):
    """``CSwinDecoder``: up ×2 → tokens → text/CSWin block → 1×1 conv + ReLU."""

    def __init__(self, channels: int, num_heads: int, split_size: int, drop_path: float) -> None:
        super().__init__()
        inner = channels // 2
        self.up = _UpConv(channels, inner)
        self.blk = CSwinTextBlock(inner, num_heads, split_size, drop_path=drop_path, d_k=inner // 2, d_v=channels)
        self.conv_relu = nn.Sequential(nn.Conv2d(inner, inner, kernel_size=1), nn.ReLU())

    def forward(self, x: torch.Tensor, text: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        x = self.up(x)
        if size is not None and tuple(x.shape[-2:]) != tuple(size):  # inputs not a multiple of 32
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        b, c, h, w = x.shape
        t = self.blk(x.flatten(2).transpose(1, 2), (h, w), text)
        return self.conv_relu(t.transpose(1, 2).reshape(b, c, h, w))


class CSwinStage(nn.Module):
    """``CSwin_Decoder``: upsampled, text-attended ``x1`` concatenated with the projected skip ``x2``."""

    def __init__(self, channels: int, num_heads: int, split_size: int, drop_path: float = 0.1) -> None:
        super().__init__()
        self.up = _UpBlock(channels, num_heads, split_size, drop_path)
        self.conv2 = nn.Sequential(nn.Conv2d(channels, channels // 2, kernel_size=1), nn.ReLU())
        self.conv_relu = nn.Sequential(nn.Conv2d(channels, channels, kernel_size=3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        x1 = self.up(x1, text, size=tuple(x2.shape[-2:]))
        return self.conv_relu(torch.cat([self.conv2(x2), x1], dim=1))


class CSwinTextHead(nn.Module):
    """The four-stage text-guided decoder; ``forward(inputs, text_a, text_b)`` → logits at 1/2 resolution.

    Args:
        channels: width of the five inputs (256).
        num_classes: output classes (2).
        text_dim: width of the text embeddings (512).
        num_heads, split_size: CSWin heads / stripe width of stages 2–4 (8, 4).
        first_heads, first_split: the same for stage 1 (2, 1), as released.
        dropout_ratio: Dropout2d before the classifier (0.1).
        drop_path: stochastic depth inside the blocks (0.1).
    """

    def __init__(
        self,
        channels: int = 256,
        num_classes: int = 2,
        text_dim: int = 512,
        num_heads: int = 8,
        split_size: int = 4,
        first_heads: int = 2,
        first_split: int = 1,
        dropout_ratio: float = 0.1,
        drop_path: float = 0.1,
    ) -> None:
        super().__init__()
        inner = channels // 2
        self.channels, self.num_classes = channels, num_classes
        self.layer1 = CSwinStage(channels, first_heads, first_split, drop_path)
        self.layer2 = CSwinStage(channels, num_heads, split_size, drop_path)
        self.layer3 = CSwinStage(channels, num_heads, split_size, drop_path)
        self.layer4 = CSwinStage(channels, num_heads, split_size, drop_path)
        self.linearA = nn.Sequential(nn.Linear(text_dim, inner), nn.LayerNorm(inner))
        self.linearB = nn.Sequential(nn.Linear(text_dim, inner), nn.LayerNorm(inner))
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, inputs: Sequence[torch.Tensor], text_a: torch.Tensor, text_b: torch.Tensor) -> torch.Tensor:
        e1, e2, e3, e4, e5 = inputs
        text = torch.cat([self.linearA(text_a), self.linearB(text_b)], dim=1)
        d = self.layer1(e4, e3, text)
        d = self.layer2(d, e2, text)
        d = self.layer3(d, e1, text)
        d = self.layer4(d, e5, text)
        return self.conv_seg(self.dropout(d))
