"""BAN for semantic change detection on BANDON (BAN repository ``opencd_custom/models/decode_heads/ban_mit_scd.py``).

The same frozen foundation model and Bi-Temporal Adapter Branch as :mod:`changekit.models.ban.model` (MiT Bi-TAB),
with two MLP heads on the four Bi-TAB stage maps of each date:

* ``decode_head.binary_cd_head`` (``BAN_BCD_MLPDecoder``): per level, concat the two dates' maps -> 1x1
  ConvModule(BN, ReLU) -> upsample to 1/4 -> concat -> ``fusion_conv`` -> MixFFN (hidden = channels) ->
  dropout -> ``conv_seg`` (2 classes: no change / change);
* ``decode_head.semantic_cd_head`` (``BAN_SCD_MLPDecoder``): the SegFormer-style MLP on one date's maps, shared
  between the dates, 3 classes (background / roof / facade).

Both heads use ``channels=256`` and dropout 0.1 as the BANDON configs. Module names follow the BAN repository
(``decode_head.side_adapter_network``, ``decode_head.binary_cd_head``, ``decode_head.semantic_cd_head``), so
its checkpoints load; the FM keys are mapped by :meth:`BAN.convert_opencd_state_dict`.

``forward(t1, t2)`` returns the binary change logits (B, 2, H, W) at input resolution, so every generic tool
treats the model as an ordinary change model; ``forward_scd(t1, t2)`` returns ``dict(change, sem1, sem2)``,
all at input resolution (bilinear, align_corners=False, as ``predict_by_feat``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from changekit.errors import ConfigError
from changekit.models.ban.heads import ConvModule, MixFFN
from changekit.models.ban.model import BAN, BitemporalAdapterBranch, _init_decoder, ban
from changekit.models.registry import register_model

__all__ = ["BAN_SCD", "BAN_BCD_MLPDecoder", "BAN_SCD_MLPDecoder", "SCD_BitemporalAdapterHead", "ban_scd"]

SEMANTIC_CLASSES = ("background", "roof", "facade")


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)


class _MLPHead(nn.Module):
    """Shared parts of the two heads: ``convs``, ``fusion_conv``, ``discriminator``, dropout, ``conv_seg``."""

    def __init__(self, conv_in: Sequence[int], channels: int, num_classes: int, dropout_ratio: float):
        super().__init__()
        self.channels = channels
        self.num_classes = num_classes
        self.convs = nn.ModuleList(ConvModule(c, channels, 1, norm=True, act=True) for c in conv_in)
        self.fusion_conv = ConvModule(channels * len(conv_in), channels, 1, norm=True, act=True)
        self.discriminator = MixFFN(channels, channels)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def _head(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        size = maps[0].shape[2:]
        out = self.fusion_conv(torch.cat([_resize(conv(x), size) for conv, x in zip(self.convs, maps)], dim=1))
        out = self.discriminator(out)
        if self.dropout is not None:
            out = self.dropout(out)
        return self.conv_seg(out)


class BAN_BCD_MLPDecoder(_MLPHead):
    """Binary change head: each level's two dates concatenated before the 1x1 conv. Output at 1/4 resolution."""

    def __init__(self, in_channels: Sequence[int], channels: int = 256, num_classes: int = 2, dropout_ratio: float = 0.1):
        super().__init__([2 * c for c in in_channels], channels, num_classes, dropout_ratio)

    def forward(self, inputs1: Sequence[torch.Tensor], inputs2: Sequence[torch.Tensor]) -> torch.Tensor:
        return self._head([torch.cat([a, b], dim=1) for a, b in zip(inputs1, inputs2)])


class BAN_SCD_MLPDecoder(_MLPHead):
    """Semantic head for one date (shared between the dates). Output at 1/4 resolution."""

    def __init__(self, in_channels: Sequence[int], channels: int = 256, num_classes: int = 3, dropout_ratio: float = 0.1):
        super().__init__(list(in_channels), channels, num_classes, dropout_ratio)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self._head(inputs)


class SCD_BitemporalAdapterHead(nn.Module):
    """``decode_head``: the Siamese Bi-TAB, the binary change head and the shared semantic head."""

    def __init__(self, side_adapter_network: BitemporalAdapterBranch, binary_cd_head: BAN_BCD_MLPDecoder,
                 semantic_cd_head: BAN_SCD_MLPDecoder):
        super().__init__()
        self.side_adapter_network = side_adapter_network
        self.binary_cd_head = binary_cd_head
        self.semantic_cd_head = semantic_cd_head

    def forward(self, img_from: torch.Tensor, img_to: torch.Tensor, fm_from: Sequence[torch.Tensor],
                fm_to: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        a = self.side_adapter_network(img_from, fm_from)
        b = self.side_adapter_network(img_to, fm_to)
        return {"change": self.binary_cd_head(a, b), "sem1": self.semantic_cd_head(a), "sem2": self.semantic_cd_head(b)}


class BAN_SCD(BAN):
    """BAN with the BANDON semantic-change head. ``forward`` gives the change logits only."""

    def __init__(self, image_encoder: nn.Module, decode_head: SCD_BitemporalAdapterHead):
        super().__init__(image_encoder, decode_head, num_classes=2)  # type: ignore[arg-type]
        self.num_semantic_classes = decode_head.semantic_cd_head.num_classes

    def forward_decoder_all(self, t1: torch.Tensor, t2: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw head outputs (1/4 resolution): ``dict(change, sem1, sem2)``."""
        if t1.shape != t2.shape:
            raise ValueError(f"the two dates differ in shape: {tuple(t1.shape)} vs {tuple(t2.shape)}")
        f1, f2 = self.extract_fm(t1, t2)
        return self.decode_head(t1, t2, f1, f2)

    def forward_decoder(self, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        return self.forward_decoder_all(t1, t2)["change"]

    def forward_scd(self, t1: torch.Tensor, t2: torch.Tensor) -> dict[str, torch.Tensor]:
        """``dict(change (B,2,H,W), sem1 (B,3,H,W), sem2 (B,3,H,W))`` at input resolution."""
        out = self.forward_decoder_all(t1, t2)
        return {k: v if v.shape[-2:] == t1.shape[-2:] else _resize(v, t1.shape[-2:]) for k, v in out.items()}


def ban_scd(fm: str | dict = "clip_vit-l14-336", bitab: str = "mit-b0", *, num_classes: int = 2,
            num_semantic_classes: int = 3, channels: int = 256, dropout_ratio: float = 0.1,
            weights: str | Path | None = None, **kwargs: Any) -> BAN_SCD:
    """Build BAN-SCD: ``fm``/``bitab`` and the other keyword arguments as :func:`changekit.models.ban.model.ban`
    (the Bi-TAB must be MiT); ``weights``: a whole checkpoint (ours or the BAN repository's)."""
    if num_classes != 2:
        raise ConfigError("BAN-SCD's change head is binary (num_classes=2)")
    if not bitab.startswith("mit-"):
        raise ConfigError(f"BAN-SCD needs a MiT Bi-TAB (mit-b0, mit-b1, mit-b2), not {bitab!r}")
    full = weights
    if full is not None:  # every weight comes from the checkpoint: allocate the FM without initialising it
        kwargs.pop("fm_weights", None)
        kwargs.pop("bitab_weights", None)
        kwargs.setdefault("fm_init", "empty")
    base = ban(fm, bitab, **kwargs)
    branch = base.decode_head.side_adapter_network
    chans = list(branch.side_encoder.out_channels)
    bcd = BAN_BCD_MLPDecoder(chans, channels=channels, num_classes=2, dropout_ratio=dropout_ratio)
    scd = BAN_SCD_MLPDecoder(chans, channels=channels, num_classes=num_semantic_classes, dropout_ratio=dropout_ratio)
    _init_decoder(bcd)
    _init_decoder(scd)
    model = BAN_SCD(base.image_encoder, SCD_BitemporalAdapterHead(branch, bcd, scd))
    if full is not None:
        from changekit.checkpoints import load_weights

        load_weights(model, full)
    return model


_PUBLISHED = {"ban-scd_vit-l14-clip_mit-b0": 72.57, "ban-scd_vit-l14-clip_mit-b2": 74.77}  # BANDON F1


def _factory(name: str, fm: str, bitab: str) -> None:
    doc = (f"BAN-SCD (BANDON semantic change) with the frozen {fm} foundation model and the {bitab} Bi-TAB "
           f"(BAN repository config {name.replace('ban-scd', 'ban')}_512x512_40k_bandon-scd).")
    published = [("BANDON", _PUBLISHED[name], "BAN repository README (likyoo/BAN)")] if name in _PUBLISHED else []
    register_model(name, ban_scd, fm, bitab, doc=doc, published=published)


for _b in ("mit-b0", "mit-b1", "mit-b2"):
    _factory(f"ban-scd_vit-l14-clip_{_b}", "clip_vit-l14-336", _b)
    _factory(f"ban-scd_vit-b16-clip_{_b}", "clip_vit-b16", _b)
register_model("ban-scd", ban_scd, doc="BAN-SCD with any FM (``fm=...`` as for ``ban``, e.g. a tiny dict for tests) "
                                       "and MiT Bi-TAB.")
