"""Cross-shaped-window (CSWin) transformer blocks, shared by MCAT-UNet's decoder and CLIPFormer's.

Both decoders (wujiang0156/MCAT-UNet ``cs_headUNet.py`` and its CLIPFormer descendant ``cswin_text_head.py``) use
the same block on (B, H·W, C) tokens:

* ``img = norm1(x)``, ``qkv = Linear(C, 3C)(img)``; half of the channels attend inside vertical stripes
  (full height × ``split_size``), the other half inside horizontal stripes (:class:`LePEAttention`, with
  locally-enhanced positional encoding: a depth-wise 3×3 conv on V added to the attention output);
* ``x = x + DropPath(proj(attention + img))`` (the normalised input is added back before the output
  projection, as released), then ``x = x + DropPath(MLP(norm2(x)))`` (ratio 4, GELU).

:class:`CSWinBlock` is that block; its output projection is called ``proj`` (MCAT-UNet) unless a subclass
names it otherwise (CLIPFormer: ``projattn``, its ``proj`` projects the text attention).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp

__all__ = ["CSWinBlock", "LePEAttention"]


class LePEAttention(nn.Module):
    """Self-attention inside stripes of one orientation with locally-enhanced positional encoding.

    ``idx=0``: vertical stripes (``H × split_size``); ``idx=1``: horizontal stripes (``split_size × W``).
    Maps whose stripe dimension is not a multiple of ``split_size`` are zero-padded symmetrically (the padded
    positions take part in attention, as in the released code) and cropped back.
    """

    def __init__(self, dim: int, idx: int, split_size: int, num_heads: int, attn_drop: float = 0.0) -> None:
        super().__init__()
        if idx not in (0, 1):
            raise ValueError(f"idx must be 0 (vertical stripes) or 1 (horizontal stripes), got {idx}")
        self.dim, self.idx, self.split_size, self.num_heads = dim, idx, split_size, num_heads
        self.attn_drop = attn_drop
        self.get_v = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def _windows(self, x: torch.Tensor, hs: int, ws: int) -> torch.Tensor:
        """(B, C, H, W) → (B·nW, C, hs, ws)."""
        b, c, h, w = x.shape
        x = x.view(b, c, h // hs, hs, w // ws, ws).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(-1, c, hs, ws)

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        """``qkv`` (B, 3, C, H, W) → (B, H·W, C)."""
        b, _, c, h, w = qkv.shape
        hs, ws = (h, self.split_size) if self.idx == 0 else (self.split_size, w)
        ph, pw = (hs - h % hs) % hs, (ws - w % ws) % ws
        top, left = ph // 2, pw // 2
        if ph or pw:
            qkv = F.pad(qkv, (left, pw - left, top, ph - top))
        hp, wp = h + ph, w + pw
        heads, hd = self.num_heads, c // self.num_heads
        q, k, v = (self._windows(qkv[:, i], hs, ws) for i in range(3))  # (B·nW, C, hs, ws)
        lepe = self.get_v(v)

        def heads_first(t: torch.Tensor) -> torch.Tensor:  # (B·nW, C, hs, ws) → (B·nW, heads, hs·ws, hd)
            return t.reshape(t.shape[0], heads, hd, hs * ws).transpose(2, 3)

        out = F.scaled_dot_product_attention(
            heads_first(q), heads_first(k), heads_first(v), dropout_p=self.attn_drop if self.training else 0.0
        )
        out = out + heads_first(lepe)
        # (B·nW, heads, hs·ws, hd) → (B, H, W, C)
        out = out.transpose(2, 3).reshape(b, hp // hs, wp // ws, c, hs, ws)
        out = out.permute(0, 1, 4, 2, 5, 3).reshape(b, hp, wp, c)
        out = out[:, top : top + h, left : left + w]
        return out.reshape(b, h * w, c)


class CSWinBlock(nn.Module):
    """One CSWin block on (B, H·W, C) tokens (``CrossShapedGLAttention`` without text)."""

    proj_name = "proj"  # the attention output projection's name in the released checkpoints

    def __init__(self, dim: int, num_heads: int, split_size: int, mlp_ratio: float = 4.0, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.1) -> None:
        super().__init__()
        if num_heads % 2 or (dim // 2) % (num_heads // 2):
            raise ValueError(f"CSWin block: num_heads ({num_heads}) must be even and divide dim/2 ({dim // 2}) in halves")
        self.dim = dim
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.attns = nn.ModuleList(
            [LePEAttention(dim // 2, idx=i, split_size=split_size, num_heads=num_heads // 2, attn_drop=attn_drop)
             for i in range(2)])
        setattr(self, self.proj_name, nn.Linear(dim, dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """``x`` (B, H·W, C) → (B, H·W, C)."""
        b, n, c = x.shape
        h, w = hw
        img = self.norm1(x)
        qkv = self.qkv(img).reshape(b, h, w, 3, c).permute(0, 3, 4, 1, 2)  # (B, 3, C, H, W)
        half = c // 2
        att = torch.cat([self.attns[0](qkv[:, :, :half]), self.attns[1](qkv[:, :, half:])], dim=2)
        x = x + self.drop_path(getattr(self, self.proj_name)(att + img))
        return x + self.drop_path(self.mlp(self.norm2(x)))
