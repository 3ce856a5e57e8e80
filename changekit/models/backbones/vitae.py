"""ViTAEv2-S backbone in its dense-prediction "window, no shift" form, any input size (incl. non-square).

ViTAEv2 (Zhang et al., "ViTAEv2: Vision Transformer Advanced by Exploring Inductive Bias for Image Recognition
and Beyond", IJCV 2023) stacks, per stage, one *reduction cell* (RC) and several *normal cells* (NC):

* **RC**: a pyramid reduction module (PRM: parallel dilated convolutions with stride = the stage's downsampling
  ratio, GELU, concatenated over dilations) feeds an attention block that maps the concatenated channels to the
  stage width (window attention for the first two stages, global attention for the last two); a parallel
  convolution module (PCM: three grouped 3×3 convs with BN/SiLU, strided) on the cell input is added, then an MLP.
  The attention has no input shortcut in the window form (widths differ); the global ("Token_transformer") form
  adds ``v`` as its shortcut, as in T2T-ViT.
* **NC**: ``x + Attn(LN(x)) + PCM(x)``, then ``x + MLP(LN(x))``. Attention is window attention (7×7, no shift)
  in stages 1–2 and global multi-head attention in stages 3–4; PCM is three grouped 3×3 convs (BN, SiLU).

ViTAEv2-S: token widths 64/128/256/512 at 1/4…1/32, embed widths 64/64/128/256, NC depths 2/2/8/2, NC heads
1/2/4/8, RC heads 1/1/2/4, NC groups 1/32/64/128, RC groups 1/16/32/64, PRM kernels 7/3/3/3 with dilations
(1,2,3,4)/(1,2,3)/(1,2)/(1,2), MLP ratio 4 (1 inside RCs), no relative position bias. 18.85 M parameters.

This module follows the remote-sensing dense form (``ViTAE_Window_NoShift_basic`` of
ViTAE-Transformer-Remote-Sensing, which DSQNet copies) in computation and in parameter names (``layers.i.RC.PRM.
convs.j.0``, ``layers.i.RC.PCM.k``, ``layers.i.RC.attn.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``layers.i.NC.j.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2,PCM.k}``), so its ImageNet release
``ViTAEv2-S.pth.tar`` (classification model, same names plus ``head``) loads key for key. Differences from the
reference code, all shape-only (no weights involved):

* any size: the reference asserts square inputs in places and assumes sizes that divide evenly; here the input
  is padded on the right/bottom to a multiple of 4 (so the PRM and PCM branches of the first RC agree; later
  stages halve with ceil on both branches) and every window attention pads to window multiples (right/bottom,
  after the norm, like the reference dense form);
* stochastic depth increases linearly over all NC blocks (the reference slices its schedule with a
  non-cumulative start index, so stages 3–4 reuse earlier rates);
* the unused per-output ``norm0..3`` of the reference dense form (built but never applied) are not built, and the
  unused ``relative_position_bias_table`` of windows (``relative_pos=False``) is not built either; their keys are
  ignored when loading.

``released_layout=True`` drops the last two differences (the reference's drop-path slicing, and the unused norms
and position tables built), so the released DSQNet's checkpoints load strictly and parameter counts match.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_

from changekit.models.backbones.swin import relative_position_index, window_partition, window_reverse
from changekit.models.backbones.weight_init import transformer_init

__all__ = ["ViTAEv2", "vitaev2_s", "convert_vitae_state_dict", "load_vitae_pretrained", "VITAE_IGNORED_KEYS"]


def _sdpa(q, k, v, bias=None, drop=0.0):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop)


class WindowAttention(nn.Module):
    """Window multi-head attention from ``in_dim`` to ``out_dim`` (optional relative position bias)."""

    def __init__(self, in_dim: int, out_dim: int, window_size: int, num_heads: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, relative_pos: bool = False) -> None:
        super().__init__()
        self.out_dim, self.window_size, self.num_heads = out_dim, window_size, num_heads
        self.relative_pos = relative_pos
        if relative_pos:
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
            self.register_buffer("relative_position_index", relative_position_index(window_size))
            trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.qkv = nn.Linear(in_dim, out_dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(out_dim, out_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bw, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        bias = None
        if self.relative_pos:
            bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
            bias = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0).to(q.dtype)
        out = _sdpa(q, k, v, bias, self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(bw, n, self.out_dim)))


def window_attend(attn: WindowAttention, x: torch.Tensor, hw: tuple[int, int], ws: int) -> torch.Tensor:
    """Apply ``attn`` in ws×ws windows of the (B, H·W, C) map ``x`` (right/bottom zero padding, no shift)."""
    h, w = hw
    b, _, c = x.shape
    x = x.view(b, h, w, c)
    pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    y = attn(window_partition(x, ws))
    y = window_reverse(y, ws, h + pad_b, w + pad_r)[:, :h, :w, :]
    return y.reshape(b, h * w, -1)


class Attention(nn.Module):
    """Global multi-head self-attention (normal cells of stages 3–4)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        out = _sdpa(q, k, v, None, self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class TokenAttention(nn.Module):
    """T2T-style attention from ``dim`` to ``out_dim`` with ``v`` as the shortcut (global reduction cells)."""

    def __init__(self, dim: int, out_dim: int, num_heads: int, qkv_bias: bool = False, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads, self.out_dim = num_heads, out_dim
        self.qkv = nn.Linear(dim, out_dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(out_dim, out_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        out = _sdpa(q, k, v, None, self.attn_drop if self.training else 0.0)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, self.out_dim)))
        return v.transpose(1, 2).reshape(b, n, self.out_dim) + out


class RCAttention(nn.Module):
    """Container holding a reduction cell's ``norm1 / attn / norm2 / mlp`` (reference parameter names)."""

    def __init__(self, in_dim: int, out_dim: int, num_heads: int, window: bool, window_size: int,
                 mlp_ratio: float, relative_pos: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(in_dim)
        if window:
            self.attn = WindowAttention(in_dim, out_dim, window_size, num_heads, True, relative_pos=relative_pos)
        else:
            self.attn = TokenAttention(in_dim, out_dim, num_heads, qkv_bias=False)
        self.norm2 = nn.LayerNorm(out_dim)
        self.mlp = Mlp(out_dim, int(out_dim * mlp_ratio), out_dim)


class PRM(nn.Module):
    """Pyramid reduction module: parallel dilated convs (stride = downsampling ratio) + GELU, concatenated."""

    def __init__(self, in_chans: int, embed_dim: int, kernel_size: int, stride: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_chans, embed_dim, kernel_size, stride,
                                    math.ceil(((kernel_size - 1) * d + 1 - stride) / 2), d), nn.GELU())
            for d in dilations
        )
        self.out_chans = embed_dim * len(dilations)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        ys = [conv(x) for conv in self.convs]
        b, c, h, w = ys[0].shape
        y = torch.cat(ys, dim=1)  # dilation-major channel order, as the reference's permute/flatten
        return y.flatten(2).transpose(1, 2), (h, w)


class ReductionCell(nn.Module):
    def __init__(self, in_chans: int, embed_dims: int, token_dims: int, downsample: int, kernel_size: int,
                 num_heads: int, dilations: Sequence[int], window: bool, group: int, window_size: int = 7,
                 mlp_ratio: float = 1.0, relative_pos: bool = False) -> None:
        super().__init__()
        self.window, self.window_size, self.token_dims = window, window_size, token_dims
        strides, r = [], downsample // 2
        for _ in range(3):
            strides.append(2 if r > 0 else 1)
            r //= 2
        self.PCM = nn.Sequential(
            nn.Conv2d(in_chans, embed_dims, 3, strides[0], 1, groups=group), nn.BatchNorm2d(embed_dims),
            nn.SiLU(inplace=True),
            nn.Conv2d(embed_dims, embed_dims, 3, strides[1], 1, groups=group), nn.BatchNorm2d(embed_dims),
            nn.SiLU(inplace=True),
            nn.Conv2d(embed_dims, token_dims, 3, strides[2], 1, groups=group),
        )
        self.PRM = PRM(in_chans, embed_dims, kernel_size, downsample, dilations)
        self.attn = RCAttention(self.PRM.out_chans, token_dims, num_heads, window, window_size, mlp_ratio, relative_pos)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """x: (B, C, H, W) → tokens (B, H'·W', token_dims) and (H', W')."""
        tokens, hw = self.PRM(x)
        y = self.attn.norm1(tokens)
        if self.window:
            y = window_attend(self.attn.attn, y, hw, self.window_size)
        else:
            y = self.attn.attn(y)
        conv = self.PCM(x).flatten(2).transpose(1, 2)
        y = y + conv
        return y + self.attn.mlp(self.attn.norm2(y)), hw


class NormalCell(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, group: int, window: bool, window_size: int = 7,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 relative_pos: bool = False, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.window, self.window_size = window, window_size
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        if window:
            self.attn = WindowAttention(dim, dim, window_size, num_heads, qkv_bias, attn_drop, drop, relative_pos)
        else:
            self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        hidden = int(dim * mlp_ratio)
        self.mlp = Mlp(dim, hidden, dim, drop=drop)
        self.PCM = nn.Sequential(
            nn.Conv2d(dim, hidden, 3, 1, 1, groups=group), nn.BatchNorm2d(hidden), nn.SiLU(inplace=True),
            nn.Conv2d(hidden, dim, 3, 1, 1, groups=group), nn.BatchNorm2d(dim), nn.SiLU(inplace=True),
            nn.Conv2d(dim, dim, 3, 1, 1, groups=group),
        )

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        y = self.norm1(x)
        y = window_attend(self.attn, y, hw, self.window_size) if self.window else self.attn(y)
        conv = self.PCM(x.transpose(1, 2).reshape(b, c, *hw)).flatten(2).transpose(1, 2)
        x = x + self.drop_path(y) + self.drop_path(conv)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BasicLayer(nn.Module):
    def __init__(self, RC: ReductionCell, NC: list[NormalCell]) -> None:
        super().__init__()
        self.RC = RC
        self.NC = nn.ModuleList(NC)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, hw = self.RC(x)
        for cell in self.NC:
            tokens = cell(tokens, hw)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *hw)


class ViTAEv2(nn.Module):
    """ViTAEv2 dense backbone; ``forward(x)`` returns one NCHW map per stage (1/4, 1/8, 1/16, 1/32).

    ``window_stages`` says which stages use 7×7 window attention (no shift) in both cell types; the others use
    global attention. Defaults are ViTAEv2-S.
    """

    def __init__(self, in_chans: int = 3, embed_dims: Sequence[int] = (64, 64, 128, 256),
                 token_dims: Sequence[int] = (64, 128, 256, 512), downsample_ratios: Sequence[int] = (4, 2, 2, 2),
                 kernel_size: Sequence[int] = (7, 3, 3, 3),
                 dilations: Sequence[Sequence[int]] = ((1, 2, 3, 4), (1, 2, 3), (1, 2), (1, 2)),
                 NC_depth: Sequence[int] = (2, 2, 8, 2), NC_heads: Sequence[int] = (1, 2, 4, 8),
                 RC_heads: Sequence[int] = (1, 1, 2, 4), NC_group: Sequence[int] = (1, 32, 64, 128),
                 RC_group: Sequence[int] = (1, 16, 32, 64), window_stages: Sequence[bool] = (True, True, False, False),
                 mlp_ratio: float = 4.0, window_size: int = 7, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, relative_pos: bool = False, released_layout: bool = False,
                 pretrained: str | Path | None = None) -> None:
        super().__init__()
        self.out_channels = list(token_dims)
        self.total_stride = math.prod(downsample_ratios)
        dpr = torch.linspace(0, drop_path_rate, sum(NC_depth)).tolist()
        layers, cin, start = [], in_chans, 0
        for i in range(len(token_dims)):
            if released_layout:  # the reference slices its schedule from NC_depth[i-1], not from the running sum
                start = 0 if i == 0 else NC_depth[i - 1]
            rc = ReductionCell(cin, embed_dims[i], token_dims[i], downsample_ratios[i], kernel_size[i], RC_heads[i],
                               dilations[i], window_stages[i], RC_group[i], window_size, 1.0, relative_pos)
            nc = [NormalCell(token_dims[i], NC_heads[i], mlp_ratio, NC_group[i], window_stages[i], window_size,
                             True, drop_rate, attn_drop_rate, dpr[start + j], relative_pos) for j in range(NC_depth[i])]
            layers.append(BasicLayer(rc, nc))
            start += NC_depth[i]
            cin = token_dims[i]
        self.layers = nn.ModuleList(layers)
        self.stem_multiple = downsample_ratios[0]
        self.apply(transformer_init)
        if released_layout:
            self._add_unused_reference_parameters(window_size)
        if pretrained:
            load_vitae_pretrained(self, pretrained)

    def _add_unused_reference_parameters(self, window_size: int) -> None:
        """What the reference builds but never uses, so that its checkpoints load strictly and counts match:
        per-output ``norm0..3`` and, in every window attention, a relative-position table and index."""
        for i, dim in enumerate(self.out_channels):
            self.add_module(f"norm{i}", nn.LayerNorm(dim, eps=1e-6))
        for m in self.modules():
            if isinstance(m, WindowAttention) and not m.relative_pos:
                table = torch.zeros((2 * window_size - 1) ** 2, m.num_heads)
                m.relative_position_bias_table = nn.Parameter(trunc_normal_(table, std=0.02))
                m.register_buffer("relative_position_index", relative_position_index(window_size))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        p = self.stem_multiple
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        outs = []
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        return outs


def vitaev2_s(**kwargs) -> ViTAEv2:
    """ViTAEv2-S (window, no shift) as DSQNet uses it: 18.85 M parameters."""
    return ViTAEv2(**kwargs)


# --------------------------------------------------------------------------------------------- weights
#: reference keys we do not build: classifier, unused output norms, unused relative-position tables, cached masks
VITAE_IGNORED_KEYS = re.compile(r"^(head\..*|norm\d*\.(weight|bias)|.*attn_mask|.*relative_position_index"
                                r"|.*relative_coords_table)$")


def convert_vitae_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip ``module.`` / ``backbone.`` prefixes (official release, EMA and open-cd checkpoints)."""
    sd = dict(sd)
    for prefix in ("module.", "backbone."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
        elif prefix == "backbone." and any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def load_vitae_pretrained(model: ViTAEv2, weights: str | Path | Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    """Load the ViTAEv2 ImageNet release (``ViTAEv2-S.pth.tar``: ``{"state_dict"|"state_dict_ema"|"model": ...}``).

    Every checkpoint key must land except :data:`VITAE_IGNORED_KEYS` (and ``relative_position_bias_table`` when
    the model was built with ``relative_pos=False``, as ViTAEv2-S is); every model key must be filled.
    Returns ``{"loaded", "ignored"}`` key lists; raises ``CheckpointError`` otherwise.
    """
    from changekit.checkpoints import CheckpointError, read_checkpoint

    source = "state dict" if isinstance(weights, Mapping) else str(weights)
    obj = weights if isinstance(weights, Mapping) else read_checkpoint(weights)
    sd = None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "state_dict_ema", "model"):  # the release stores the plain weights first
            if isinstance(obj.get(key), Mapping):
                sd = obj[key]
                break
    if sd is None:
        sd = obj
    sd = convert_vitae_state_dict({k: v for k, v in sd.items() if isinstance(v, torch.Tensor)})
    own = model.state_dict()
    ignored = sorted(k for k in sd if VITAE_IGNORED_KEYS.match(k)
                     or (k.endswith("relative_position_bias_table") and k not in own))
    use = {k: v for k, v in sd.items() if k not in ignored}
    unexpected = sorted(k for k in use if k not in own)
    shapes = sorted(f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in use.items()
                    if k in own and v.shape != own[k].shape)
    missing = sorted(k for k in own if k not in use and not k.endswith("relative_position_index"))
    if unexpected or shapes or missing:
        raise CheckpointError(
            f"{source} is not a ViTAEv2 checkpoint for this configuration: unexpected {unexpected[:5]}"
            f" ({len(unexpected)}), shape mismatches {shapes[:5]} ({len(shapes)}), missing {missing[:5]} ({len(missing)})"
        )
    model.load_state_dict(use, strict=False)
    return {"loaded": sorted(use), "ignored": ignored}
