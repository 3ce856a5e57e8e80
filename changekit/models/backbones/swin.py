"""Swin Transformer backbone for dense prediction (four NCHW feature maps), any input size.

This is the dense-prediction form of Swin (Liu et al., ICCV 2021) that mmsegmentation, open-cd and the
official ``Swin-Transformer-Semantic-Segmentation`` repository use, written for changekit:

* ``forward(x)`` returns four NCHW maps: ``embed_dim * (1, 2, 4, 8)`` channels at 1/4, 1/8, 1/16, 1/32
  (96/192/384/768 for Swin-T), each passed through its own LayerNorm ``norm0..norm3``.
* Any input size: the image is padded on the right/bottom to a multiple of the patch size, every block pads its
  map to a multiple of the window (after ``norm1``, before the cyclic shift, with the shift mask computed over
  the padded map; padded tokens are zeros, as in mmseg) and patch merging pads odd sizes. A map smaller than
  the window still uses the full 7×7 window (padded), exactly like mmseg / the official segmentation code.
* The state-dict layout is the official Microsoft one (``patch_embed.proj``, ``layers.i.blocks.j.attn.qkv``,
  ``layers.i.blocks.j.attn.relative_position_bias_table``, ``layers.i.downsample.{norm,reduction}`` at the end
  of stage i), plus ``norm0..3``. Official ImageNet checkpoints and open-cd checkpoints of models using the
  ``swin`` backbone (DSQNet) therefore load as they are.
* :func:`convert_swin_state_dict` also reads mmseg's converted layout (``stages.i.blocks.j.attn.w_msa.qkv``,
  ``ffn.layers.0.0``, ``patch_embed.projection``...), undoing mmseg's re-ordering of the patch-merging
  weights (mmseg uses ``nn.Unfold``, which orders the four merged neighbours differently).
* :func:`load_swin_pretrained` loads an ImageNet checkpoint in either format and checks that every backbone
  key lands: only the classifier ``head.*``, the final ``norm`` (the dense form has ``norm0..3`` instead,
  which stay freshly initialised as in mmseg/open-cd) and the non-persistent ``attn_mask`` are left out.

We write the blocks ourselves rather than using timm's: timm pads *after* the cyclic shift and shrinks the
window for small maps at build time, which computes something different from the segmentation Swin that
published weights and results come from on sizes that are not window multiples (128/64/32/16 at 512 input).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_

from changekit.models.backbones.weight_init import transformer_init

__all__ = [
    "SwinTransformer",
    "swin_tiny",
    "convert_swin_state_dict",
    "load_swin_pretrained",
    "SWIN_IGNORED_KEYS",
]


# --------------------------------------------------------------------------------------------- blocks
def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) → (B·nW, ws·ws, C); H and W must be multiples of ``ws``."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """(B·nW, ws·ws, C) → (B, H, W, C)."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // ws) * (w // ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def relative_position_index(ws: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)  # 2, ws²
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)  # ws², ws², 2
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative position bias."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # persistent, as in the official code, so that official / open-cd checkpoints load strictly
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B·nW, N, C); mask: (nW, N, N) with 0 / -100 entries or None."""
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)  # 1, heads, N, N
        drop = self.attn_drop if self.training else 0.0
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=drop)
        else:  # fold windows into the head axis so the (nW, heads, N, N) bias broadcasts over the batch
            nw = mask.shape[0]
            bias = (bias + mask.to(bias.dtype).unsqueeze(1)).reshape(1, nw * self.num_heads, n, n)
            fold = (bw // nw, nw * self.num_heads, n, -1)
            out = F.scaled_dot_product_attention(q.reshape(fold), k.reshape(fold), v.reshape(fold),
                                                 attn_mask=bias.to(q.dtype), dropout_p=drop)
            out = out.reshape(bw, self.num_heads, n, -1)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(bw, n, c)))


class SwinBlock(nn.Module):
    """(Shifted-)window attention block on (B, L, C) tokens of an H×W map."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift: bool = False, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2 if shift else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], mask: torch.Tensor | None) -> torch.Tensor:
        h, w = hw
        b, _, c = x.shape
        ws = self.window_size
        y = self.norm1(x).view(b, h, w, c)
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        if self.shift_size:
            y = torch.roll(y, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        y = window_reverse(self.attn(window_partition(y, ws), mask if self.shift_size else None), ws, hp, wp)
        if self.shift_size:
            y = torch.roll(y, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        y = y[:, :h, :w, :].reshape(b, h * w, c)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


def shift_mask(hp: int, wp: int, ws: int, shift: int, device: torch.device) -> torch.Tensor:
    """Attention mask (nW, ws², ws²) of the shifted windows on a padded hp×wp map (0 inside a region, -100 across)."""
    img = torch.zeros(1, hp, wp, 1, device=device)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = window_partition(img, ws).squeeze(-1)  # nW, ws²
    m = win.unsqueeze(1) - win.unsqueeze(2)
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)


class PatchMerging(nn.Module):
    """2×2 neighbour concatenation (order x[0::2,0::2], x[1::2,0::2], x[0::2,1::2], x[1::2,1::2]) → LN → Linear."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        h, w = hw
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        ho, wo = x.shape[1], x.shape[2]
        return self.reduction(self.norm(x.view(b, ho * wo, 4 * c))), (ho, wo)


class BasicLayer(nn.Module):
    """One Swin stage: ``depth`` blocks (alternating regular / shifted windows), then optional patch merging."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float, qkv_bias: bool,
                 drop: float, attn_drop: float, drop_path: Sequence[float], downsample: bool) -> None:
        super().__init__()
        self.window_size = window_size
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, i % 2 == 1, mlp_ratio, qkv_bias, drop, attn_drop, drop_path[i])
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, hw: tuple[int, int]):
        ws = self.window_size
        hp, wp = -(-hw[0] // ws) * ws, -(-hw[1] // ws) * ws
        mask = shift_mask(hp, wp, ws, ws // 2, x.device) if len(self.blocks) > 1 else None
        for blk in self.blocks:
            x = blk(x, hw, mask)
        out, out_hw = x, hw
        if self.downsample is not None:
            x, hw = self.downsample(x, hw)
        return out, out_hw, x, hw


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96, norm: bool = True) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        x = self.proj(x)
        if self.norm is not None:
            b, c, hh, ww = x.shape
            x = self.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).view(b, c, hh, ww)
        return x


# --------------------------------------------------------------------------------------------- model
class SwinTransformer(nn.Module):
    """Swin Transformer returning ``len(out_indices)`` NCHW maps, each normalised by ``norm{i}``.

    Args:
        in_chans: input channels (3).
        embed_dim: width of stage 1 (96 for Swin-T); stage i has ``embed_dim * 2**i`` channels.
        depths, num_heads: blocks and heads per stage ((2, 2, 6, 2), (3, 6, 12, 24) for Swin-T).
        window_size: attention window (7).
        drop_path_rate: stochastic depth, linearly increasing over all blocks (open-cd DSQNet uses 0.3).
        out_indices: which stages to return.
        frozen_stages: -1 for none; k ≥ 0 freezes the patch embedding and stages 0..k-1 (as mmseg).
        weights: optional path of an ImageNet checkpoint (official or mmseg format), see
            :func:`load_swin_pretrained`.
    """

    def __init__(self, in_chans: int = 3, embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, patch_size: int = 4, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.2, out_indices: Sequence[int] = (0, 1, 2, 3), patch_norm: bool = True,
                 weights: str | Path | None = None) -> None:
        super().__init__()
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.out_indices = tuple(out_indices)
        self.num_features = [embed_dim * 2**i for i in range(self.num_layers)]
        self.out_channels = [self.num_features[i] for i in self.out_indices]
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, patch_norm)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            self.layers.append(BasicLayer(
                self.num_features[i], depths[i], num_heads[i], window_size, mlp_ratio, qkv_bias, drop_rate,
                attn_drop_rate, dpr[sum(depths[:i]):sum(depths[:i + 1])], downsample=i < self.num_layers - 1,
            ))
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
        self.apply(transformer_init)
        if weights:
            load_swin_pretrained(self, weights)

    def no_weight_decay_keywords(self) -> set[str]:
        return {"relative_position_bias_table"}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        b, c, h, w = x.shape
        hw = (h, w)
        x = self.pos_drop(x.flatten(2).transpose(1, 2))
        outs = []
        for i, layer in enumerate(self.layers):
            out, out_hw, x, hw = layer(x, hw)
            if i in self.out_indices:
                out = getattr(self, f"norm{i}")(out)
                outs.append(out.transpose(1, 2).reshape(b, self.num_features[i], *out_hw).contiguous())
        return outs


def swin_tiny(**kwargs) -> SwinTransformer:
    """Swin-T: embed 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24), window 7 (27.52 M parameters)."""
    cfg = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7)
    cfg.update(kwargs)
    return SwinTransformer(**cfg)


# --------------------------------------------------------------------------------------------- weights
#: keys of ImageNet checkpoints that the dense backbone does not use (classifier, final norm, cached masks)
SWIN_IGNORED_KEYS = re.compile(r"^(head\..*|norm\.(weight|bias)|.*attn_mask)$")


def _unfold_to_official_reduction(w: torch.Tensor) -> torch.Tensor:
    """Inverse of mmseg's ``correct_unfold_reduction_order`` (mmseg layout → official layout)."""
    out_c, in_c = w.shape
    w = w.reshape(out_c, in_c // 4, 4).transpose(1, 2)  # undo transpose: (out, 4, in/4) in order [0, 2, 1, 3]
    return w[:, [0, 2, 1, 3], :].reshape(out_c, in_c)  # the permutation is its own inverse


def _unfold_to_official_norm(v: torch.Tensor) -> torch.Tensor:
    """Inverse of mmseg's ``correct_unfold_norm_order``."""
    (in_c,) = v.shape
    v = v.reshape(in_c // 4, 4).transpose(0, 1)
    return v[[0, 2, 1, 3], :].reshape(in_c)


def _is_mmseg_layout(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith("stages.") or k.startswith("patch_embed.projection") for k in sd)


def convert_swin_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return ``sd`` in our (official Microsoft) layout; accepts official, mmseg-converted, or ``backbone.``-prefixed.

    Official ImageNet keys pass through unchanged (including ``head.*`` and ``norm.*``, which callers drop, see
    :data:`SWIN_IGNORED_KEYS`). mmseg keys (``stages.i.blocks.j.attn.w_msa.qkv``, ``ffn.layers.0.0``,
    ``ffn.layers.1``, ``patch_embed.projection``, ``stages.i.downsample.{reduction,norm}``) are renamed, and
    the patch-merging weights are put back into the official neighbour order.
    """
    sd = dict(sd)
    if sd and all(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone."):]: v for k, v in sd.items()}
    elif any(k.startswith("backbone.") for k in sd):  # a whole-model checkpoint: keep only the backbone
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    if not _is_mmseg_layout(sd):
        return sd
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        nk = k
        if k.startswith("stages."):
            nk = "layers." + k[len("stages."):]
            nk = nk.replace(".attn.w_msa.", ".attn.")
            nk = nk.replace(".ffn.layers.0.0.", ".mlp.fc1.").replace(".ffn.layers.1.", ".mlp.fc2.")
            if ".downsample.reduction." in nk:
                v = _unfold_to_official_reduction(v)
            elif ".downsample.norm." in nk:
                v = _unfold_to_official_norm(v)
        elif k.startswith("patch_embed.projection."):
            nk = "patch_embed.proj." + k[len("patch_embed.projection."):]
        out[nk] = v
    return out


def load_swin_pretrained(model: SwinTransformer, weights: str | Path | Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    """Load ImageNet Swin weights (official ``swin_tiny_patch4_window7_224.pth`` or mmseg's converted file).

    Every key of the checkpoint must land in the model except :data:`SWIN_IGNORED_KEYS`; every model key must
    be filled except the dense-prediction norms ``norm0..3`` (and ``relative_position_index``, a constant).
    Returns ``{"loaded": [...], "ignored": [...], "missing": [...]}``; raises
    :class:`changekit.checkpoints.CheckpointError` on unexpected keys, shape mismatches or missing weights.
    """
    from changekit.checkpoints import CheckpointError, extract_state_dict, read_state_dict

    source = "state dict" if isinstance(weights, Mapping) else str(weights)
    sd = extract_state_dict(weights, source) if isinstance(weights, Mapping) else read_state_dict(weights)
    sd = convert_swin_state_dict(sd)
    own = model.state_dict()
    ignored = sorted(k for k in sd if SWIN_IGNORED_KEYS.match(k))
    use = {k: v for k, v in sd.items() if k not in ignored}
    unexpected = sorted(k for k in use if k not in own)
    shapes = sorted(f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in use.items()
                    if k in own and v.shape != own[k].shape)
    optional = re.compile(r"^(norm\d+\..*|.*relative_position_index)$")
    missing = sorted(k for k in own if k not in use and not optional.match(k))
    if unexpected or shapes or missing:
        raise CheckpointError(
            f"{source} is not a Swin checkpoint for this configuration: unexpected {unexpected[:5]}"
            f" ({len(unexpected)}), shape mismatches {shapes[:5]} ({len(shapes)}), missing {missing[:5]} ({len(missing)})"
        )
    model.load_state_dict(use, strict=False)
    return {"loaded": sorted(use), "ignored": ignored, "missing": sorted(k for k in own if k not in use)}
