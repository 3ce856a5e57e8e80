"""BAN: Bi-Temporal Adapter Network (Li et al., "A New Learning Paradigm for Foundation Model-based Remote
Sensing Change Detection", TGRS 2024), as open-cd 1.1.0 builds it.

A frozen foundation model (FM, a CLIP / RemoteCLIP / IN-21k ViT, or any timm ViT) encodes a resized copy of
each date; a small trainable Bi-Temporal Adapter Branch (Bi-TAB: MiT-b0/b1/b2 or ResNet-18 V1c) encodes the
full-resolution crop, and after each fused stage a bridging module aligns the FM features to the stage
(``conv_clips``), selects from them by cross-attention (``clip_attns``) and injects them; the fused map feeds
the next stage. The decoder (``BAN_MLPDecoder`` for MiT, ``BAN_BITHead`` for ResNet) compares the two dates.

Module tree (open-cd names below ``decode_head``, so BAN checkpoints load unchanged there)::

    image_encoder            FrozenViT (timm ViT in .model; open-cd's mmseg keys are mapped by
                             convert_opencd_state_dict)
    decode_head.side_adapter_network.{side_encoder, conv_clips, clip_attns}
    decode_head.mask_decoder

``forward(t1, t2)`` returns logits at input resolution; ``forward_decoder`` the decoder's own output
(1/4 resolution for MiT, full for BiT). Inputs may be any size (non-square too): the FM always sees its own
resolution (bilinear, no antialias), the Bi-TAB the crop as given (MiT needs sides divisible by 32 for the
1/4-resolution maps to line up exactly as in the reference; other sizes work like open-cd's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from changekit.errors import ConfigError
from changekit.models.ban.heads import BAN_BITHead, BAN_MLPDecoder, BridgeLayer, align_module
from changekit.models.base import ChangekitModel
from changekit.models.foundation.loaders import load_fm_weights, opencd_vit_to_timm
from changekit.models.foundation.vit import FrozenViT, build_fm
from changekit.models.recompute import maybe_checkpoint
from changekit.models.registry import register_model

__all__ = ["BAN", "BitemporalAdapterBranch", "BitemporalAdapterHead", "ban", "build_bitab"]


class BitemporalAdapterBranch(nn.Module):
    """The Bi-TAB encoder with a bridging module after each fused stage (open-cd ``BitemporalAdapterBranch``)."""

    def __init__(self, side_encoder: nn.Module, encoder_type: str, fm_channels: int, fusion_index: Sequence[int],
                 stage_channels: Sequence[int], stage_heads: Sequence[int], checkpoint: bool = False):
        super().__init__()
        self.checkpoint = checkpoint  # recompute each stage (+ bridge) in backward: large crops in less memory
        if encoder_type not in ("mit", "resnet"):
            raise ValueError(f"unsupported Bi-TAB encoder type {encoder_type!r}")
        self.side_encoder = side_encoder
        self.encoder_type = encoder_type
        self.fusion_index = tuple(int(i) for i in fusion_index)
        self.conv_clips = nn.ModuleList(align_module(fm_channels, stage_channels[i]) for i in self.fusion_index)
        self.clip_attns = nn.ModuleList(BridgeLayer(stage_channels[i], stage_heads[i]) for i in self.fusion_index)
        for seq in self.conv_clips:  # caffe2_xavier_init, as open-cd's init_weights
            nn.init.kaiming_uniform_(seq[1].conv.weight, a=1, mode="fan_in", nonlinearity="leaky_relu")
            nn.init.zeros_(seq[1].conv.bias)

    def fuse(self, k: int, x: torch.Tensor, fm_feature: torch.Tensor) -> torch.Tensor:
        return self.clip_attns[k](x, self.conv_clips[k](fm_feature))

    def forward(self, x: torch.Tensor, fm_features: Sequence[torch.Tensor]):
        enc = self.side_encoder
        if self.encoder_type == "mit":
            stages = [partial(enc.forward_stage, i) for i in range(enc.num_stages)]
        else:
            stages = [lambda t: enc.maxpool(enc.stem(t))] + [getattr(enc, name) for name in enc.res_layers]
        outs = []
        for i, stage in enumerate(stages):
            idx = i if self.encoder_type == "mit" else i - 1  # the ResNet stem is not a stage
            if idx in self.fusion_index:
                k = self.fusion_index.index(idx)
                x = maybe_checkpoint(self, self.checkpoint, self._fused_stage, stage, k, x, fm_features[k])
            else:
                x = maybe_checkpoint(self, self.checkpoint, stage, x)
            outs.append(x)
        return outs if self.encoder_type == "mit" else x

    def _fused_stage(self, stage, k: int, x: torch.Tensor, fm_feature: torch.Tensor) -> torch.Tensor:
        return self.fuse(k, stage(x), fm_feature)


class BitemporalAdapterHead(nn.Module):
    """``decode_head``: the Siamese Bi-TAB (shared weights) and the change decoder."""

    def __init__(self, side_adapter_network: BitemporalAdapterBranch, mask_decoder: nn.Module):
        super().__init__()
        self.side_adapter_network = side_adapter_network
        self.mask_decoder = mask_decoder

    def forward(self, img_from: torch.Tensor, img_to: torch.Tensor, fm_from: Sequence[torch.Tensor],
                fm_to: Sequence[torch.Tensor]) -> torch.Tensor:
        san = self.side_adapter_network
        if not self.training:
            # Both dates in one batch: the same function (BN in eval uses running stats) at better kernel
            # efficiency. Training stays per date: BN batch statistics are per date, and the smaller batches
            # keep the backward pass's peak memory lower.
            b = img_from.shape[0]
            feats = san(torch.cat([img_from, img_to]), [torch.cat([a, c]) for a, c in zip(fm_from, fm_to)])
            if isinstance(feats, torch.Tensor):
                return self.mask_decoder(feats[:b], feats[b:])
            return self.mask_decoder([f[:b] for f in feats], [f[b:] for f in feats])
        return self.mask_decoder(san(img_from, fm_from), san(img_to, fm_to))


class BAN(ChangekitModel):
    #: tests/models/test_ban.py: bf16 and int8 agree with fp32 on the golden inputs
    fast_precisions = ("bf16", "int8")

    def __init__(self, image_encoder: FrozenViT, decode_head: BitemporalAdapterHead, num_classes: int = 2):
        super().__init__(num_classes, 3)
        self.image_encoder = image_encoder
        # channels_last: oneDNN's 1x1 and depth-wise convs of the Bi-TAB and decoder run 2-3x faster on NHWC
        # (the MiT's token maps already are NHWC in memory). Loaded weights keep this layout.
        self.decode_head = decode_head.to(memory_format=torch.channels_last)

    def extract_fm(self, t1: torch.Tensor, t2: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """FM features of both dates, computed as one batch (frozen, no autograd)."""
        b = t1.shape[0]
        feats = self.image_encoder(torch.cat([t1, t2], dim=0))
        return [f[:b] for f in feats], [f[b:] for f in feats]

    def forward_decoder(self, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        if t1.shape != t2.shape:
            raise ValueError(f"the two dates differ in shape: {tuple(t1.shape)} vs {tuple(t2.shape)}")
        f1, f2 = self.extract_fm(t1, t2)
        return self.decode_head(t1, t2, f1, f2)

    def trainable_parameters(self):
        return (p for p in self.parameters() if p.requires_grad)

    def convert_opencd_state_dict(self, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """open-cd BAN keys -> ours: ``image_encoder.<mmseg ViT>`` becomes ``image_encoder.model.<timm ViT>``."""
        sd = dict(sd)
        if not any(k.startswith("image_encoder.layers.") or k.startswith("image_encoder.ln_pre.") for k in sd):
            raise KeyError("no open-cd image_encoder keys")
        enc = {k: v for k, v in sd.items() if k.startswith("image_encoder.")}
        mapped, ignored = opencd_vit_to_timm(enc)
        if ignored:
            raise KeyError(f"unrecognised image_encoder keys: {ignored[:5]}")
        out = {k: v for k, v in sd.items() if not k.startswith("image_encoder.")}
        out.update({f"image_encoder.model.{k}": v for k, v in mapped.items()})
        return out


# --------------------------------------------------------------------------------------------- builders
_MIT_HEADS = (1, 2, 5, 8)


def build_bitab(bitab: str, fm_channels: int, weights: str | Path | None = None,
                checkpoint: bool = False) -> tuple[BitemporalAdapterBranch, nn.Module]:
    """The Bi-TAB (encoder + bridges) and its decoder for ``mit-b0|b1|b2`` or ``bit`` (ResNet-18 V1c)."""
    if bitab.startswith("mit-"):
        from changekit.models.backbones.mit import mit

        enc = mit(bitab[4:], drop_path_rate=0.1, weights=weights)
        chans = list(enc.out_channels)
        branch = BitemporalAdapterBranch(enc, "mit", fm_channels, (1, 2, 3), chans, _MIT_HEADS, checkpoint)
        return branch, BAN_MLPDecoder(chans, channels=128, num_classes=2, dropout_ratio=0.1)
    if bitab in ("bit", "r18"):
        from changekit.models.backbones.resnet import resnet18_v1c

        enc = resnet18_v1c(weights=weights, num_stages=3, strides=(1, 2, 1), dilations=(1, 1, 1), out_indices=(2,))
        chans = [64 * 2**i for i in range(4)]
        branch = BitemporalAdapterBranch(enc, "resnet", fm_channels, (0, 1, 2), chans, (1, 2, 4, 8), checkpoint)
        return branch, BAN_BITHead(in_channels=256, channels=32, embed_dims=64, enc_depth=1, dec_depth=8, num_heads=8,
                                   token_len=4, pre_upsample=2, upsample_size=4)
    raise ConfigError(f"unknown BAN Bi-TAB {bitab!r}; choose mit-b0, mit-b1, mit-b2 or bit")


def _init_decoder(m: nn.Module) -> None:
    """mmcv ConvModule init (He-normal fan-out for ReLU convs, unit BN) for the decoder's ConvModules."""
    from changekit.models.ban.heads import ConvModule

    for mod in m.modules():
        if isinstance(mod, ConvModule):
            nn.init.kaiming_normal_(mod.conv.weight, mode="fan_out", nonlinearity="relu")
            if mod.conv.bias is not None:
                nn.init.zeros_(mod.conv.bias)
            if hasattr(mod, "bn"):
                nn.init.ones_(mod.bn.weight)
                nn.init.zeros_(mod.bn.bias)


def ban(fm: str | Mapping[str, Any] = "clip_vit-b16", bitab: str = "mit-b0", *, num_classes: int = 2, in_channels: int = 3,
        fm_weights: str | Path | Mapping[str, torch.Tensor] | None = None, bitab_weights: str | Path | None = None,
        weights: str | Path | None = None,
        fm_out_indices: Sequence[int] | None = None, fm_img_size: int | None = None, fm_num_layers: int | None = None,
        fm_cache_dir: str | Path | None = None, fm_init: str = "random", checkpoint_bitab: bool = False,
        **fm_kwargs: Any) -> BAN:
    """Build a BAN model.

    fm: a preset (``clip_vit-b16``, ``clip_vit-l14-336``, ``remoteclip_vit-b32``, ``remoteclip_vit-l14``,
        ``georsclip_vit-b32``, ``georsclip_vit-l14-336``, ``in21k_vit-b16``, ``in21k_vit-l16``) or ``timm:<name>``.
    bitab: ``mit-b0``, ``mit-b1``, ``mit-b2`` or ``bit`` (ResNet-18 V1c with the BiT head).
    fm_weights: FM weights in an official format (see :mod:`changekit.models.foundation.loaders`) or a hub spec.
    bitab_weights: ImageNet weights for the Bi-TAB encoder (a file, or ``"imagenet"`` to download).
    weights: a whole BAN checkpoint (changekit or open-cd layout), loaded strictly.
    fm_init: ``"random"``; ``"empty"`` (allocated, not randomly initialised: when every FM weight is loaded right
        after, which is implied by ``fm_weights`` / ``weights``; without those, zero-filled, which is cheap and,
        unlike uninitialised memory, never NaN: for benchmarks); ``"meta"`` (shape-only FM, for counting
        parameters and checking shapes without allocating the large ViTs).
    checkpoint_bitab: recompute each Bi-TAB stage in backward (activation checkpointing) to train large crops in
        less memory, at about a third more Bi-TAB compute. (The Mix-FFNs' depth-wise conv + GELU are always
        recomputed while training: :mod:`changekit.models.recompute`.)
    """
    if num_classes != 2:
        raise ConfigError("BAN's decoders are built for binary change (num_classes=2)")
    if in_channels != 3:
        raise ConfigError(f"BAN's foundation model takes RGB images; in_channels={in_channels} is not supported")
    full = weights
    if fm_init not in ("random", "empty", "meta"):
        raise ConfigError(f"fm_init must be 'random', 'empty' or 'meta', not {fm_init!r}")
    if fm_init == "meta" and (fm_weights is not None or full is not None):
        raise ConfigError("fm_init='meta' builds a shape-only foundation model; it cannot receive weights")
    lazy = fm_weights is not None or full is not None or fm_init != "random"
    if isinstance(fm, str) and fm.startswith("timm:"):
        image_encoder = build_fm(fm, out_indices=fm_out_indices, img_size=fm_img_size, cache_dir=fm_cache_dir, **fm_kwargs)
    else:
        image_encoder = build_fm(fm, out_indices=fm_out_indices, img_size=fm_img_size, num_layers=fm_num_layers,
                                 cache_dir=fm_cache_dir, device="meta" if lazy else None, **fm_kwargs)
        if lazy and fm_init != "meta":
            image_encoder.to_empty(device="cpu")
            if fm_weights is None and full is None:  # nothing will overwrite it: zeros, not leftover memory
                with torch.no_grad():
                    for t in [*image_encoder.parameters(), *image_encoder.buffers()]:
                        t.zero_()
    if full is not None:  # the whole checkpoint supplies every weight: skip the component files
        fm_weights = bitab_weights = None
    if fm_weights is not None:
        load_fm_weights(image_encoder, fm_weights)
    branch, decoder = build_bitab(bitab, image_encoder.embed_dim, bitab_weights, checkpoint=checkpoint_bitab)
    _init_decoder(decoder)
    model = BAN(image_encoder, BitemporalAdapterHead(branch, decoder), num_classes=num_classes)
    if full is not None:
        from changekit.checkpoints import load_weights

        load_weights(model, full)
    return model


_BAN = "open-cd configs/ban/README.md"
#: the published LEVIR-CD (and S2Looking) F1 of open-cd's BAN configs
_PUBLISHED = {
    "ban_vit-l14-clip_bit": [("LEVIR-CD", 91.85, _BAN), ("S2Looking", 65.44, _BAN)],
    "ban_vit-b16-clip_mit-b0": [("LEVIR-CD", 91.71, _BAN)],
    "ban_vit-l14-clip_mit-b0": [("LEVIR-CD", 91.86, _BAN), ("S2Looking", 66.70, _BAN)],
    "ban_vit-l14-clip_mit-b1": [("LEVIR-CD", 92.10, _BAN)],
    "ban_vit-l14-clip_mit-b2": [("LEVIR-CD", 92.30, _BAN)],
    "ban_vit-b32-remoteclip_mit-b0": [("LEVIR-CD", 91.75, _BAN)],
    "ban_vit-l14-remoteclip_mit-b0": [("LEVIR-CD", 91.92, _BAN)],
    "ban_vit-b32-georsclip_mit-b0": [("LEVIR-CD", 91.77, _BAN)],
    "ban_vit-l14-georsclip_mit-b0": [("LEVIR-CD", 91.96, _BAN)],
    "ban_vit-b16-in21k_mit-b0": [("LEVIR-CD", 91.66, _BAN + " (its row links the mit-b2 config)")],
    "ban_vit-l16-in21k_mit-b0": [("LEVIR-CD", 91.67, _BAN)],
}


def _factory(name: str, fm: str, bitab: str) -> None:
    doc = f"BAN with the frozen {fm} foundation model and the {bitab} Bi-TAB (open-cd config {name})."
    register_model(name, ban, fm, bitab, doc=doc, published=_PUBLISHED.get(name, []))


for _fm_name, _fm in (("vit-b16-clip", "clip_vit-b16"), ("vit-l14-clip", "clip_vit-l14-336")):
    for _b in ("mit-b0", "mit-b1", "mit-b2", "bit"):
        _factory(f"ban_{_fm_name}_{_b}", _fm, _b)
for _fm_name, _fm in (("vit-b32-remoteclip", "remoteclip_vit-b32"), ("vit-l14-remoteclip", "remoteclip_vit-l14"),
                      ("vit-b32-georsclip", "georsclip_vit-b32"), ("vit-l14-georsclip", "georsclip_vit-l14-336"),
                      ("vit-b16-in21k", "in21k_vit-b16"), ("vit-l16-in21k", "in21k_vit-l16")):
    _factory(f"ban_{_fm_name}_mit-b0", _fm, "mit-b0")
_factory("ban_vit-b16-in21k_mit-b2", "in21k_vit-b16", "mit-b2")
register_model("ban", ban, doc="BAN with any FM (``fm='timm:vit_small_patch14_dinov2'``...) and Bi-TAB "
                               "(``bitab='mit-b0'``).")
