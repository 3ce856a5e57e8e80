"""BAN's bridging modules and Bi-TAB decoders (open-cd ``decode_heads/ban_utils.py`` / ``ban_head.py``).

Module and parameter names follow open-cd so that released BAN checkpoints load without renaming:

* :class:`BridgeLayer` (``clip_attns.k``): ``x = x + MHA(LN2d(x), fm)`` (cross-attention, query = Bi-TAB map,
  key = value = the aligned FM map), ``x = x + MixFFN(LN2d(x))`` with the literal hidden width 4, then
  ``x = x + bilinear(fm, size of x)``. LN2d is a channel LayerNorm with eps 1e-5 (mmpretrain ``LN2d``).
* the alignment ``conv_clips.k = Sequential(LayerNorm2d(C_fm, eps=1e-6), ConvModule(C_fm -> C_k, 1x1))``;
* :class:`BAN_MLPDecoder` (MiT Bi-TAB) and :class:`BAN_BITHead` (ResNet Bi-TAB, BiT transformer with ReLU in
  ``conv_att`` and attention scale ``in_dims ** -0.5``).

mmcv's ``ConvModule`` is mirrored by :class:`ConvModule` (keys ``conv.*`` and ``bn.*``; conv bias only without norm).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from changekit.models.bit import (  # open-cd's BiT blocks, shared with BiT
    TransformerDecoder,
    TransformerEncoder,
)
from changekit.models.recompute import recompute_dw_gelu

__all__ = [
    "ConvModule",
    "LayerNorm2d",
    "LN2d",
    "MixFFN",
    "CrossMultiheadAttention",
    "BridgeLayer",
    "align_module",
    "BAN_MLPDecoder",
    "BAN_BITHead",
]


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(int(s) for s in size):
        return x  # a same-size bilinear resize is the identity; skip the copy
    return F.interpolate(x, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)


class ConvModule(nn.Module):
    """conv -> (BN) -> (ReLU), named like mmcv's ConvModule (``conv``, ``bn``); bias only when there is no norm."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, padding: int = 0,
                 norm: bool = False, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=not norm)
        if norm:
            self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if hasattr(self, "bn"):
            x = self.bn(x)
        return self.activate(x) if self.activate is not None else x


class LayerNorm2d(nn.Module):
    """mmseg ``san_layers.LayerNorm2d``: LayerNorm over channels of an NCHW map (eps 1e-6)."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.num_channels = num_channels
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the same normalisation as mmseg's mean/var formula, in one fused kernel
        x = F.layer_norm(x.permute(0, 2, 3, 1), (self.num_channels,), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class LN2d(nn.LayerNorm):
    """mmpretrain ``LN2d``: ``nn.LayerNorm`` applied over the channels of an NCHW map (eps 1e-5)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class MixFFN(nn.Module):
    """open-cd ``ban_utils.MixFFN`` on NCHW maps: ``identity + (1x1 -> dw3x3 -> GELU -> 1x1)(x)``."""

    def __init__(self, embed_dims: int, feedforward_channels: int, ffn_drop: float = 0.0):
        super().__init__()
        drop = nn.Dropout(ffn_drop)
        self.layers = nn.Sequential(
            nn.Conv2d(embed_dims, feedforward_channels, 1),
            nn.Conv2d(feedforward_channels, feedforward_channels, 3, padding=1, groups=feedforward_channels),
            nn.GELU(),
            drop,
            nn.Conv2d(feedforward_channels, embed_dims, 1),
            drop,
        )

    def forward(self, x: torch.Tensor, identity: torch.Tensor | None = None) -> torch.Tensor:
        return (x if identity is None else identity) + self.hidden(self.layers[0](x))

    def hidden(self, h: torch.Tensor) -> torch.Tensor:
        """Everything after the first 1x1 conv (the depth-wise conv and GELU recomputed in backward)."""
        _, dw, act, drop1, fc2, drop2 = self.layers
        return drop2(fc2(drop1(recompute_dw_gelu(self, dw, act, h))))


class CrossMultiheadAttention(nn.Module):
    """Cross-attention from an NCHW query map to NCHW key/value tokens (``attn.attn`` = ``nn.MultiheadAttention``)."""

    def __init__(self, embed_dims: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0):
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=attn_drop, bias=qkv_bias, batch_first=True)

    def forward(self, x_q: torch.Tensor, x_kv: torch.Tensor, identity: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x_q.shape
        q = x_q.flatten(2).transpose(1, 2)
        kv = x_kv.flatten(2).transpose(1, 2)
        out = self.attn(q, kv, kv, need_weights=False)[0]
        out = out.transpose(1, 2).reshape(b, c, h, w)
        return (x_q if identity is None else identity) + out


class BridgeLayer(nn.Module):
    """BAN's bridging module (select + inject) for one fused Bi-TAB stage."""

    def __init__(self, embed_dims: int, num_heads: int, feedforward_channels: int = 4, drop_rate: float = 0.0):
        super().__init__()
        self.norm1 = LN2d(embed_dims)
        self.attn = CrossMultiheadAttention(embed_dims, num_heads, qkv_bias=True)
        self.norm2 = LN2d(embed_dims)
        self.ffn = MixFFN(embed_dims, feedforward_channels, ffn_drop=drop_rate)

    def forward(self, x: torch.Tensor, x_kv: torch.Tensor) -> torch.Tensor:
        hw = x.shape[-2:]
        x = self.attn(self.norm1(x), x_kv, identity=x)
        x = self.ffn(self.norm2(x), identity=x)
        return x + _resize(x_kv, hw)


def align_module(fm_channels: int, out_channels: int) -> nn.Sequential:
    """``conv_clips.k``: channel LayerNorm (eps 1e-6) and a 1x1 conv (with bias) to the Bi-TAB stage width."""
    return nn.Sequential(LayerNorm2d(fm_channels), ConvModule(fm_channels, out_channels, 1, norm=False, act=False))


# --------------------------------------------------------------------------------------------- MLP decoder
class BAN_MLPDecoder(nn.Module):
    """BAN's decoder for the MiT Bi-TAB: per-date SegFormer-style MLP fusion, concat, MixFFN, 1x1 classifier.

    Output at the resolution of the first feature map (1/4 of the input).
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 128, num_classes: int = 2, dropout_ratio: float = 0.1):
        super().__init__()
        self.in_channels = list(in_channels)
        self.channels = channels
        self.convs = nn.ModuleList(ConvModule(c, channels, 1, norm=True, act=True) for c in self.in_channels)
        self.fusion_conv = ConvModule(channels * len(self.in_channels), channels, 1, norm=True, act=True)
        self.discriminator = MixFFN(channels * 2, channels * 2)
        self.conv_seg = nn.Conv2d(channels * 2, num_classes, 1)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None

    def base_forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``fusion_conv(cat([resize(conv_i(x_i)) for i]))``, computed without the concatenation.

        The fusion conv is 1x1 without bias and bilinear resizing is linear with weights summing to one, so the
        fusion conv's slice for input ``i`` commutes with the resize: apply it at the stage's own (low) resolution
        and sum. Same function (fp32 rounding aside), about a quarter of the FLOPs and no large concatenated map
        to build or keep for backward.
        """
        size = inputs[0].shape[2:]
        weights = self.fusion_conv.conv.weight.split(self.channels, dim=1)
        fused = None
        for conv, x, w in zip(self.convs, inputs, weights):
            y = _resize(F.conv2d(conv(x), w), size)
            fused = y if fused is None else fused + y
        fm = self.fusion_conv
        return fm.activate(fm.bn(fused))

    def forward(self, inputs1: Sequence[torch.Tensor], inputs2: Sequence[torch.Tensor]) -> torch.Tensor:
        x1, x2 = self.base_forward(inputs1), self.base_forward(inputs2)
        # discriminator(cat([x1, x2])) with its first 1x1 conv split over the two halves: autograd keeps x1 and x2
        # (already kept by the fusion ReLUs) instead of a second, concatenated copy; the cat is only the residual.
        first = self.discriminator.layers[0]
        w1, w2 = first.weight.split(self.channels, dim=1)
        out = F.conv2d(x1, w1, first.bias) + F.conv2d(x2, w2)
        out = self.discriminator.hidden(out) + torch.cat([x1, x2], dim=1)
        if self.dropout is not None:
            out = self.dropout(out)
        return self.conv_seg(out)


# --------------------------------------------------------------------------------------------- BiT head
class BAN_BITHead(nn.Module):
    """BAN's BiT head for the ResNet Bi-TAB. Output at full input resolution (x2 pre-upsample, x4 at the end)."""

    def __init__(self, in_channels: int = 256, channels: int = 32, num_classes: int = 2, embed_dims: int = 64,
                 enc_depth: int = 1, dec_depth: int = 8, num_heads: int = 8, token_len: int = 4,
                 pre_upsample: int = 2, upsample_size: int = 4, drop_rate: float = 0.0):
        super().__init__()
        self.token_len = token_len
        self.pre_upsample = pre_upsample
        self.upsample_size = upsample_size
        self.conv_att = ConvModule(channels, token_len, 1, norm=False, act=True)  # ReLU before the softmax, as open-cd
        self.enc_pos_embedding = nn.Parameter(torch.randn(1, token_len * 2, channels))
        self.pre_process = nn.Sequential(nn.Identity(), ConvModule(in_channels, channels, 3, padding=1, norm=False, act=True))
        self.encoder = nn.ModuleList(TransformerEncoder(channels, embed_dims, num_heads, drop_rate) for _ in range(enc_depth))
        self.decoder = nn.ModuleList(TransformerDecoder(channels, embed_dims, num_heads, drop_rate) for _ in range(dec_depth))
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def _pre(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self.pre_process(_resize(x, (h * self.pre_upsample, w * self.pre_upsample)))

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        att = torch.softmax(self.conv_att(x).reshape(b, self.token_len, 1, -1), dim=-1)
        return (x.reshape(b, 1, c, -1) * att).sum(-1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        x1, x2 = self._pre(x1), self._pre(x2)
        token = torch.cat([self._tokens(x1), self._tokens(x2)], dim=1) + self.enc_pos_embedding
        for enc in self.encoder:
            token = enc(token)
        token1, token2 = torch.chunk(token, 2, dim=1)
        b, c, h, w = x1.shape
        y1 = x1.flatten(2).transpose(1, 2)
        y2 = x2.flatten(2).transpose(1, 2)
        for dec in self.decoder:
            y1 = dec(y1, token1)
            y2 = dec(y2, token2)
        y = torch.abs(y1 - y2).transpose(1, 2).reshape(b, c, h, w)
        y = _resize(y, (h * self.upsample_size, w * self.upsample_size))
        return self.conv_seg(y)
