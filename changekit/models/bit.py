"""BiT (Chen, Qi & Shi, TGRS 2021) as open-cd builds ``bit_r18_256x256_40k_levircd``.

A Siamese ResNet-18 V1c truncated after its third stage (strides 1, 2, 1: output stride 8, 256 channels),
open-cd's ``FeatureFusionNeck(policy='concat')`` (parameter-free; here the head simply takes both maps) and
the BiT transformer head (:class:`BITHead`, below). The head's output is already at input
resolution for inputs whose sides are multiples of 8; otherwise it is resized bilinearly.

State-dict keys are open-cd's (``backbone.stem.0.weight``, ``backbone.layer1.0.conv1.weight``…,
``decode_head.encoder.0.attn.to_q.weight``…), so open-cd checkpoints load with :func:`changekit.load_weights`.

The head, as open-cd's ``BITHead`` builds it, with open-cd's key layout.

Per date and with shared weights: bilinear ×``pre_upsample`` → 3×3 conv + ReLU (``pre_process.1``) →
``token_len`` semantic tokens (``conv_att``: 1×1 conv + ReLU, softmax over pixels, weighted sums of features).
The tokens of both dates, plus a learnt position embedding, go through a transformer encoder; each date's
pixels then query their own date's tokens through a transformer decoder. The head returns
``conv_seg(|x1 - x2|`` upsampled ×``upsample_size``) after a Dropout2d (0.1), like mmseg's ``cls_seg``.

The building blocks (:class:`CrossAttention`, :class:`FeedForward`, :class:`TransformerEncoder`,
:class:`TransformerDecoder`) are open-cd's and are reused by BAN's ``BAN_BITHead``. Details that matter for
reproducing open-cd: the attention scale is ``in_dims ** -0.5`` (the token width, not the head width), q/k/v
projections have no bias, ``FeedForward`` is Linear → ReLU → Dropout → Linear → Dropout (keys ``ff.0``/``ff.3``),
the encoder applies ``norm1`` to both query and reference, and LayerNorms use eps 1e-5.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from changekit.models.backbones.resnet import ResNetV1c, load_resnet_pretrained
from changekit.models.base import ChangekitModel
from changekit.models.registry import register_model

__all__ = [
    "BiT",
    "bit",
    "BITHead",
    "ConvReLU",
    "CrossAttention",
    "FeedForward",
    "TransformerDecoder",
    "TransformerEncoder",
]

NormLayer = Callable[[int], nn.Module]


class ConvReLU(nn.Module):
    """mmcv ``ConvModule`` without a norm: ``conv`` (with bias) then ReLU (keys ``<name>.conv.*``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.conv(x))


class CrossAttention(nn.Module):
    """Multi-head attention of ``x`` (queries) over ``ref`` (keys and values); scale ``in_dims ** -0.5``."""

    def __init__(
        self,
        in_dims: int,
        embed_dims: int,
        num_heads: int,
        dropout_rate: float = 0.0,
        apply_softmax: bool = True,
    ) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f"embed_dims {embed_dims} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = in_dims**-0.5
        self.apply_softmax = apply_softmax
        self.to_q = nn.Linear(in_dims, embed_dims, bias=False)
        self.to_k = nn.Linear(in_dims, embed_dims, bias=False)
        self.to_v = nn.Linear(in_dims, embed_dims, bias=False)
        self.fc_out = nn.Sequential(nn.Linear(embed_dims, in_dims), nn.Dropout(dropout_rate))

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.reshape(b, n, self.num_heads, -1).transpose(1, 2)  # (B, heads, N, d)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.to_q(x)), self._heads(self.to_k(ref)), self._heads(self.to_v(ref))
        attn = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        if self.apply_softmax:
            attn = attn.softmax(dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).flatten(2)  # (B, N, embed_dims)
        return self.fc_out(out)


class FeedForward(nn.Sequential):
    """Linear → ReLU → Dropout → Linear → Dropout."""

    def __init__(self, dim: int, hidden_dim: int, dropout_rate: float = 0.0) -> None:
        super().__init__(
            nn.Linear(dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout_rate),
            nn.Linear(hidden_dim, dim),
            nn.Dropout(dropout_rate),
        )


def _layer_norm(dim: int) -> nn.Module:
    return nn.LayerNorm(dim, eps=1e-5)


class TransformerEncoder(nn.Module):
    """Pre-norm self-attention block: ``x + attn(n1(x), n1(x))``, then ``+ ff(n2(.))``."""

    def __init__(
        self,
        in_dims: int,
        embed_dims: int,
        num_heads: int,
        drop_rate: float = 0.0,
        norm_layer: NormLayer = _layer_norm,
        apply_softmax: bool = True,
    ) -> None:
        super().__init__()
        self.attn = CrossAttention(in_dims, embed_dims, num_heads, drop_rate, apply_softmax)
        self.ff = FeedForward(in_dims, embed_dims, drop_rate)
        self.norm1 = norm_layer(in_dims)
        self.norm2 = norm_layer(in_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h)
        return x + self.ff(self.norm2(x))


class TransformerDecoder(nn.Module):
    """Pre-norm cross-attention block: ``x + attn(n1(x), n1_(ref))``, then ``+ ff(n2(.))``."""

    def __init__(
        self,
        in_dims: int,
        embed_dims: int,
        num_heads: int,
        drop_rate: float = 0.0,
        norm_layer: NormLayer = _layer_norm,
        apply_softmax: bool = True,
    ) -> None:
        super().__init__()
        self.attn = CrossAttention(in_dims, embed_dims, num_heads, drop_rate, apply_softmax)
        self.ff = FeedForward(in_dims, embed_dims, drop_rate)
        self.norm1 = norm_layer(in_dims)
        self.norm1_ = norm_layer(in_dims)
        self.norm2 = norm_layer(in_dims)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), self.norm1_(ref))
        return x + self.ff(self.norm2(x))


def _upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    # mmseg's Upsample: resize to int(size * factor), bilinear, align_corners=False
    if factor == 1:
        return x
    size = [int(s * factor) for s in x.shape[-2:]]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class BITHead(nn.Module):
    """open-cd ``BITHead``; ``forward(x1, x2)`` takes each date's backbone feature map (B, in_channels, h, w)
    and returns logits (B, num_classes, h·pre_upsample·upsample_size, ...).

    Args mirror open-cd's: ``channels`` (token width, 32), ``embed_dims`` (attention/FF width, 64),
    ``enc_depth``, ``enc_with_pos``, ``dec_depth``, ``num_heads``, ``drop_rate``, ``use_tokenizer`` (else
    ``pool_size``² pooled tokens with ``pool_mode`` max/avg), ``token_len``, ``pre_upsample``, ``upsample_size``,
    ``dropout_ratio`` (before ``conv_seg``).
    """

    def __init__(
        self,
        in_channels: int = 256,
        channels: int = 32,
        embed_dims: int = 64,
        enc_depth: int = 1,
        enc_with_pos: bool = True,
        dec_depth: int = 8,
        num_heads: int = 8,
        drop_rate: float = 0.0,
        pool_size: int = 2,
        pool_mode: str = "max",
        use_tokenizer: bool = True,
        token_len: int = 4,
        pre_upsample: int = 2,
        upsample_size: int = 4,
        num_classes: int = 2,
        dropout_ratio: float = 0.1,
        norm_layer: NormLayer = _layer_norm,
    ) -> None:
        super().__init__()
        if not use_tokenizer and pool_mode not in ("max", "avg"):
            raise ValueError(f"pool_mode must be 'max' or 'avg', got {pool_mode!r}")
        self.in_channels = in_channels
        self.channels = channels
        self.num_classes = num_classes
        self.use_tokenizer = use_tokenizer
        self.pool_size, self.pool_mode = pool_size, pool_mode
        self.token_len = token_len if use_tokenizer else pool_size * pool_size
        self.pre_upsample, self.upsample_size = pre_upsample, upsample_size

        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, std=0.01)  # mmseg's decode-head init
        nn.init.zeros_(self.conv_seg.bias)
        if use_tokenizer:
            self.conv_att = ConvReLU(channels, self.token_len, 1)
        self.enc_with_pos = enc_with_pos
        if enc_with_pos:
            self.enc_pos_embedding = nn.Parameter(torch.randn(1, self.token_len * 2, channels))
        # pre_process.0 is open-cd's (parameter-free) Upsample; index 1 keeps its key names
        self.pre_process = nn.Sequential(nn.Identity(), ConvReLU(in_channels, channels, 3, padding=1))
        self.encoder = nn.ModuleList(
            TransformerEncoder(channels, embed_dims, num_heads, drop_rate, norm_layer)
            for _ in range(enc_depth)
        )
        self.decoder = nn.ModuleList(
            TransformerDecoder(channels, embed_dims, num_heads, drop_rate, norm_layer)
            for _ in range(dec_depth)
        )

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) → (B, token_len, C)."""
        if self.use_tokenizer:
            b, c = x.shape[:2]
            att = self.conv_att(x).reshape(b, self.token_len, 1, -1).softmax(dim=-1)
            return (x.reshape(b, 1, c, -1) * att).sum(-1)
        pool = F.adaptive_max_pool2d if self.pool_mode == "max" else F.adaptive_avg_pool2d
        return pool(x, (self.pool_size, self.pool_size)).flatten(2).transpose(1, 2)

    def _pre(self, x: torch.Tensor) -> torch.Tensor:
        return self.pre_process(_upsample(x, self.pre_upsample))

    def forward_features(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """The up-sampled difference map before the classifier, (B, channels, H, W)."""
        x1, x2 = self._pre(x1), self._pre(x2)
        tokens = torch.cat([self._tokens(x1), self._tokens(x2)], dim=1)
        if self.enc_with_pos:
            tokens = tokens + self.enc_pos_embedding
        for block in self.encoder:
            tokens = block(tokens)
        tok1, tok2 = tokens.chunk(2, dim=1)

        b, c, h, w = x1.shape
        p1, p2 = x1.flatten(2).transpose(1, 2), x2.flatten(2).transpose(1, 2)  # (B, hw, C)
        for block in self.decoder:
            p1, p2 = block(p1, tok1), block(p2, tok2)
        x1 = p1.transpose(1, 2).reshape(b, c, h, w)
        x2 = p2.transpose(1, 2).reshape(b, c, h, w)
        return _upsample(torch.abs(x1 - x2), self.upsample_size)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.dropout(self.forward_features(x1, x2)))


class BiT(ChangekitModel):
    """Siamese ResNet V1c + BiT head; ``forward(t1, t2)`` → logits (B, num_classes, H, W).

    ``backbone_weights`` loads ImageNet weights into the backbone: ``"imagenet"`` / ``"open-mmlab://resnet18_v1c"``
    (downloaded once through torch.hub), a URL, or a local file in open-mmlab's format.
    """

    inference_channels_last = True  # 1.1x in fp32 (benchmarks/channels_last.py)

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 3,
        depth: int = 18,
        num_stages: int = 3,
        strides: tuple[int, ...] = (1, 2, 1),
        dilations: tuple[int, ...] = (1, 1, 1),
        backbone_weights: str | Path | None = None,
        head: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(num_classes, in_channels)
        self.backbone = ResNetV1c(
            depth=depth,
            in_channels=in_channels,
            num_stages=num_stages,
            strides=strides,
            dilations=dilations,
            out_indices=(num_stages - 1,),
            contract_dilation=True,
        )
        if backbone_weights:
            name = (
                "open-mmlab://resnet18_v1c" if str(backbone_weights) == "imagenet" and depth == 18 else backbone_weights
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


def bit(depth: int, num_classes: int = 2, in_channels: int = 3, backbone_weights: str | Path | None = None,
        **kwargs: Any) -> BiT:
    """BiT with a ResNet-``depth`` V1c backbone. ``backbone_weights``: backbone ImageNet weights (None,
    ``"imagenet"``, ``"open-mmlab://resnet18_v1c"``, a URL or a local file); ``head``: overrides of
    :class:`~BITHead` arguments."""
    return BiT(num_classes=num_classes, in_channels=in_channels, depth=depth, backbone_weights=backbone_weights,
               **kwargs)


register_model("bit_r18", bit, 18,
               doc="BiT with a ResNet-18 V1c backbone, open-cd's ``bit_r18_256x256_40k_levircd`` (2.99 M parameters).\n\n"
                   "``backbone_weights``: backbone ImageNet weights (None, ``\"imagenet\"``, "
                   "``\"open-mmlab://resnet18_v1c\"``, a URL or a local file); ``head``: overrides of :class:`~BITHead` "
                   "arguments.",
               published=[("LEVIR-CD", 90.26, "open-cd configs/bit/README.md")])
