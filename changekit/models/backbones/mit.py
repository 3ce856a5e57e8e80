"""Mix Vision Transformer (MiT), the SegFormer encoder, laid out like mmseg's ``MixVisionTransformer``.

Architecture (Xie et al., 2021, as mmseg 1.2.2 builds it):

* four stages, each an overlapping patch embedding (strided conv + LayerNorm), a list of transformer
  blocks and a final LayerNorm;
* blocks are pre-norm: ``x + DropPath(EfficientSelfAttention(LN(x)))`` then ``x + DropPath(MixFFN(LN(x)))``;
* efficient self-attention shrinks keys/values with a strided conv of kernel = stride = ``sr_ratio``
  followed by LayerNorm, then runs ``nn.MultiheadAttention`` (q from the full map);
* Mix-FFN is 1x1 conv -> 3x3 depth-wise conv -> GELU -> 1x1 conv on the NCHW map.

The state-dict keys are exactly mmseg's (``layers.{s}.0.projection``, ``layers.{s}.1.{j}.attn.attn.in_proj_weight``,
``layers.{s}.1.{j}.ffn.layers.{0,1,4}``, ``layers.{s}.2`` ...), so mmseg / open-cd checkpoints load as they are.
NVlabs SegFormer checkpoints (``mit_b0.pth``: ``patch_embed1.proj``, ``block1.0.attn.q`` / ``attn.kv``, ``mlp.fc1``...)
are converted by :func:`convert_nvlabs_mit`.

The encoder can be run one stage at a time with :meth:`MixVisionTransformer.forward_stage` (NCHW in, NCHW out),
so that a caller (BAN's bi-temporal adapter) can modify a stage's output before the next stage sees it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from timm.layers import DropPath

from changekit.errors import ChangekitError
from changekit.models.backbones.weight_init import mmseg_conv_init, read_imagenet_weights
from changekit.models.recompute import recompute_dw_gelu

__all__ = [
    "MIT_SETTINGS",
    "MIT_PRETRAINED_URLS",
    "MixVisionTransformer",
    "OverlapPatchEmbed",
    "EfficientSelfAttention",
    "MixFFN",
    "MiTBlock",
    "mit",
    "convert_nvlabs_mit",
    "mit_state_dict_from",
    "load_mit_pretrained",
]

# size -> (embed_dims of stage 1 per head, depths); heads (1, 2, 5, 8) for every size as mmseg's configs.
MIT_SETTINGS: dict[str, dict[str, Any]] = {
    "b0": dict(embed_dims=32, num_layers=(2, 2, 2, 2)),
    "b1": dict(embed_dims=64, num_layers=(2, 2, 2, 2)),
    "b2": dict(embed_dims=64, num_layers=(3, 4, 6, 3)),
}

# ImageNet-1k weights converted to mmseg's layout by open-mmlab (the files open-cd's configs name).
MIT_PRETRAINED_URLS: dict[str, str] = {
    "b0": "https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/mit_b0_20220624-7e0fe6dd.pth",
    "b1": "https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/mit_b1_20220624-02e5a6a1.pth",
    "b2": "https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/mit_b2_20220624-66e8bf70.pth",
}


def _nlc_to_nchw(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    b, _, c = x.shape
    return x.transpose(1, 2).reshape(b, c, hw[0], hw[1])


def _nchw_to_nlc(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


class OverlapPatchEmbed(nn.Module):
    """Strided conv with kernel ``patch_size`` and padding ``patch_size // 2``, then LayerNorm over channels."""

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int, stride: int, eps: float = 1e-6):
        super().__init__()
        self.projection = nn.Conv2d(in_channels, embed_dims, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dims, eps=eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.projection(x)
        hw = (x.shape[2], x.shape[3])
        return self.norm(_nchw_to_nlc(x)), hw


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a spatially reduced map (mmseg's EfficientMultiheadAttention).

    Returns ``identity + DropPath(Dropout(attn(x)))`` as mmseg does (the residual lives inside the module).
    """

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.sr_ratio = sr_ratio
        self.attn = nn.MultiheadAttention(
            embed_dims, num_heads, dropout=attn_drop, bias=qkv_bias, batch_first=True
        )
        if sr_ratio > 1:
            self.sr = nn.Conv2d(embed_dims, embed_dims, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(embed_dims, eps=eps)
        self.proj_drop = nn.Dropout(proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, x: torch.Tensor, hw: tuple[int, int], identity: torch.Tensor | None = None
    ) -> torch.Tensor:
        kv = x
        if self.sr_ratio > 1:
            kv = self.norm(_nchw_to_nlc(self.sr(_nlc_to_nchw(x, hw))))
        out = self.attn(x, kv, kv, need_weights=False)[0]
        return (x if identity is None else identity) + self.drop_path(self.proj_drop(out))


class MixFFN(nn.Module):
    """1x1 conv -> 3x3 depth-wise conv -> GELU -> dropout -> 1x1 conv -> dropout on the NCHW map, plus the residual."""

    def __init__(self, embed_dims: int, hidden: int, drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(embed_dims, hidden, 1),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
            nn.GELU(),
            nn.Dropout(drop),
            nn.Conv2d(hidden, embed_dims, 1),
            nn.Dropout(drop),
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, x: torch.Tensor, hw: tuple[int, int], identity: torch.Tensor | None = None
    ) -> torch.Tensor:
        fc1, dw, act, drop1, fc2, drop2 = self.layers
        out = drop1(recompute_dw_gelu(self, dw, act, fc1(_nlc_to_nchw(x, hw))))
        out = _nchw_to_nlc(drop2(fc2(out)))
        return (x if identity is None else identity) + self.drop_path(out)


class MiTBlock(nn.Module):
    """Pre-norm SegFormer block on (B, N, C) tokens (mmseg's TransformerEncoderLayer)."""

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        mlp_ratio: int = 4,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims, eps=eps)
        self.attn = EfficientSelfAttention(
            embed_dims, num_heads, sr_ratio, qkv_bias, attn_drop, drop, drop_path, eps
        )
        self.norm2 = nn.LayerNorm(embed_dims, eps=eps)
        self.ffn = MixFFN(embed_dims, mlp_ratio * embed_dims, drop, drop_path)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = self.attn(self.norm1(x), hw, identity=x)
        return self.ffn(self.norm2(x), hw, identity=x)


class MixVisionTransformer(nn.Module):
    """SegFormer's hierarchical encoder. ``forward(x)`` returns the four stage maps (NCHW, strides 4/8/16/32).

    ``layers[i] = ModuleList([OverlapPatchEmbed, ModuleList(blocks), LayerNorm])`` as in mmseg.
    """

    def __init__(
        self,
        in_channels: int = 3,
        embed_dims: int = 64,
        num_layers: Sequence[int] = (3, 4, 6, 3),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        patch_sizes: Sequence[int] = (7, 3, 3, 3),
        strides: Sequence[int] = (4, 2, 2, 2),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        out_indices: Sequence[int] = (0, 1, 2, 3),
        mlp_ratio: int = 4,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        eps: float = 1e-6,
    ):
        super().__init__()
        if not (len(num_layers) == len(num_heads) == len(patch_sizes) == len(strides) == len(sr_ratios)):
            raise ValueError(
                "num_layers, num_heads, patch_sizes, strides and sr_ratios need one entry per stage"
            )
        self.in_channels = in_channels
        self.num_stages = len(num_layers)
        self.out_indices = tuple(out_indices)
        self.out_channels = [embed_dims * h for h in num_heads]
        self.strides = tuple(strides)
        # stochastic depth, linear in the block index
        dpr = torch.linspace(0, drop_path_rate, sum(num_layers)).tolist()
        cur = 0
        self.layers = nn.ModuleList()
        c_in = in_channels
        for i, n in enumerate(num_layers):
            c = self.out_channels[i]
            blocks = nn.ModuleList(
                MiTBlock(
                    c,
                    num_heads[i],
                    mlp_ratio,
                    sr_ratios[i],
                    qkv_bias,
                    drop_rate,
                    attn_drop_rate,
                    dpr[cur + j],
                    eps,
                )
                for j in range(n)
            )
            self.layers.append(
                nn.ModuleList(
                    [
                        OverlapPatchEmbed(c_in, c, patch_sizes[i], strides[i], eps),
                        blocks,
                        nn.LayerNorm(c, eps=eps),
                    ]
                )
            )
            c_in = c
            cur += n
        self.init_weights()

    def init_weights(self) -> None:
        """mmseg's initialisation: trunc-normal(0.02) linears, unit LayerNorms, He-normal (fan-out) convs."""
        mmseg_conv_init(self)

    def forward_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Run stage ``i`` on an NCHW map (the image for ``i == 0``, else stage ``i - 1``'s output); return NCHW."""
        embed, blocks, norm = self.layers[i]
        x, hw = embed(x)
        for blk in blocks:
            x = blk(x, hw)
        return _nlc_to_nchw(norm(x), hw)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(self.num_stages):
            x = self.forward_stage(i, x)
            if i in self.out_indices:
                outs.append(x)
        return outs


# --------------------------------------------------------------------------------------------- weights
def convert_nvlabs_mit(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an NVlabs SegFormer ``mit_bX.pth`` state dict to mmseg's key layout (drops the ImageNet ``head.*``).

    ``attn.q`` and ``attn.kv`` are concatenated into ``attn.attn.in_proj_*``; ``mlp.fc1``/``mlp.dwconv.dwconv``/``mlp.fc2``
    become ``ffn.layers.0/1/4`` (linear weights reshaped to 1x1 convs); ``patch_embedN``/``blockN``/``normN``
    become ``layers.{N-1}.0``/``.1``/``.2``.
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith("head."):
            continue
        stem, _, rest = k.partition(".")
        if stem.startswith("patch_embed"):
            s = int(stem[len("patch_embed") :]) - 1
            out[f"layers.{s}.0.{rest.replace('proj.', 'projection.', 1)}"] = v
        elif stem.startswith("block"):
            s = int(stem[len("block") :]) - 1
            j, _, sub = rest.partition(".")
            base = f"layers.{s}.1.{j}."
            if sub.startswith("attn.kv."):
                continue  # merged with attn.q below
            if sub.startswith("attn.q."):
                kind = sub[len("attn.q.") :]
                kv_key = f"{stem}.{j}.attn.kv.{kind}"
                if kv_key not in sd:
                    raise KeyError(f"{kv_key} missing for {k}")
                out[base + f"attn.attn.in_proj_{kind}"] = torch.cat([v, sd[kv_key]], dim=0)
            elif sub.startswith("attn.proj."):
                out[base + "attn.attn.out_proj." + sub[len("attn.proj.") :]] = v
            elif sub.startswith("mlp."):
                name = sub[len("mlp.") :]
                for src, dst in (("fc1.", "0."), ("dwconv.dwconv.", "1."), ("fc2.", "4.")):
                    if name.startswith(src):
                        kind = name[len(src) :]
                        if src != "dwconv.dwconv." and kind == "weight" and v.ndim == 2:
                            v = v.reshape(*v.shape, 1, 1)
                        out[base + "ffn.layers." + dst + kind] = v
                        break
                else:
                    raise KeyError(f"unknown NVlabs MiT key {k}")
            else:  # norm1, norm2, attn.sr, attn.norm keep their names
                out[base + sub] = v
        elif stem.startswith("norm") and stem[4:].isdigit():
            out[f"layers.{int(stem[4:]) - 1}.2.{rest}"] = v
        else:
            raise KeyError(f"unknown NVlabs MiT key {k}")
    return out


def mit_state_dict_from(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return a MiT state dict in mmseg's layout from mmseg, NVlabs or open-cd (``backbone.``-prefixed) weights."""
    sd = dict(sd)
    if any(k.startswith("backbone.") for k in sd):  # a whole segmentor / change detector checkpoint
        sd = {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
    if any(k.startswith(("patch_embed1.", "block1.")) for k in sd):
        return convert_nvlabs_mit(sd)
    return {k: v for k, v in sd.items() if not k.startswith("head.")}


def load_mit_pretrained(
    model: MixVisionTransformer, weights: str | Path | Mapping[str, torch.Tensor], size: str | None = None
) -> MixVisionTransformer:
    """Load ImageNet MiT weights into ``model``, strictly (every key used, none missing, shapes equal).

    ``weights`` is a local file (mmseg's ``mit_b0_20220624-7e0fe6dd.pth`` or NVlabs' ``mit_b0.pth``), a state dict,
    an ``http(s)://`` URL, or ``"imagenet"`` for the mmseg file of ``size`` (downloaded through ``torch.hub``
    into its cache; the only path that touches the network, and only when asked).
    """
    from changekit.checkpoints import check_state_dict

    source, sd = read_imagenet_weights(weights, MIT_PRETRAINED_URLS, size, "MiT")
    try:
        sd = mit_state_dict_from(sd)
    except KeyError as e:
        raise ChangekitError(
            f"{source}: not a MiT checkpoint in mmseg or NVlabs SegFormer layout ({e})"
        ) from None
    check_state_dict(model, sd, source)
    model.load_state_dict(sd, strict=True)
    return model


def mit(
    size: str = "b0", in_channels: int = 3, weights: str | Path | None = None, **kwargs: Any
) -> MixVisionTransformer:
    """Build MiT-``size`` (b0, b1, b2) with mmseg's settings; ``weights`` as in :func:`load_mit_pretrained`."""
    if size not in MIT_SETTINGS:
        raise ValueError(f"unknown MiT size {size!r}; choose from {', '.join(MIT_SETTINGS)}")
    model = MixVisionTransformer(in_channels=in_channels, **{**MIT_SETTINGS[size], **kwargs})
    if weights:
        load_mit_pretrained(model, weights, size)
    return model
