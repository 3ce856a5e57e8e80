"""DSQNet (Qin & Zhang, "Deep Semantic-Query Network for Change Detection", IEEE GRSL 2024).

Three named families share this file (docs/models_dsqnet.md, "Which DSQNet is the paper's"):

* ``dsqnet_swin-t`` / ``dsqnet_vitaev2-s`` — **the released DSQNet**: the head the released configs were written
  for and the released checkpoints were trained with (QinZelin/DSQNet c9ed32b, May 2024, :mod:`.head`; channels 128,
  img_size 512), the released Swin-T and ViTAE window/no-shift ViTAEv2-S (drop path 0.3 with its released
  schedule, unused ``norm0..3`` and position tables built). 29,074,574 / 20,307,676 parameters, equal to the
  released build; the released checkpoint layout (``backbone.*``, ``decode_head.*``) loads key for key. The configs
  ``configs/dsqnet/DSQNet_*`` build these.
* ``dsqnet-2408_swin-t`` / ``dsqnet-2408_vitaev2-s`` — the authors' August 2024 upload (8f19920, :mod:`.head_2408`),
  the design of the paper's Fig. 2b, exactly as written (its BMQ ``.view`` included), at the only width it runs
  with (64). 27,757,284 / 19,036,466 parameters, equal to that build. No checkpoint was published for it.
* ``dsqnet-cx_swin-t`` / ``dsqnet-cx_vitaev2-s`` — **changekit's design**, not the paper's code (:mod:`.head_cx`).

All: Siamese backbone → DSP per date → query boxes → BMQ → FDAF → 1×1 classifier at 1/4, upsampled to the input;
trained with cross-entropy + OHEM (thresh 0.7, min_kept 100000).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from changekit.models.backbones.swin import SwinTransformer, load_swin_pretrained
from changekit.models.backbones.vitae import ViTAEv2, load_vitae_pretrained
from changekit.models.base import ChangekitModel
from changekit.models.dsqnet.head import DSQNetHead
from changekit.models.dsqnet.head_2408 import DSQNetHead2408
from changekit.models.dsqnet.head_cx import DSQHeadCX
from changekit.models.registry import register_model

__all__ = ["DSQNet", "dsqnet_swin_t", "dsqnet_vitaev2_s", "dsqnet_2408_swin_t", "dsqnet_2408_vitaev2_s",
           "dsqnet_cx_swin_t", "dsqnet_cx_vitaev2_s"]


class DSQNet(ChangekitModel):
    """Backbone shared by both dates + a DSQNet head (:class:`.head.DSQNetHead` or :class:`.head_cx.DSQHeadCX`).

    Parameter names are the released ones (``backbone.*``, ``decode_head.*``), so a released checkpoint's
    ``state_dict`` loads as it is.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, num_classes: int = 2, in_channels: int = 3) -> None:
        super().__init__(num_classes, in_channels)
        self.backbone = backbone
        self.decode_head = head

    def forward_decoder(self, t1: torch.Tensor, t2: torch.Tensor, return_boxes: bool = False):
        """Raw logits at 1/4 of the input (and the (B, K, 4) boxes if asked)."""
        return self.decode_head(self.backbone(t1), self.backbone(t2), return_boxes=return_boxes)



def _swin(in_channels: int, drop_path_rate: float, backbone_weights: str | Path | None, **kw) -> SwinTransformer:
    cfg = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7)
    cfg.update(kw)
    m = SwinTransformer(in_chans=in_channels, drop_path_rate=drop_path_rate, **cfg)
    if backbone_weights:
        load_swin_pretrained(m, backbone_weights)
    return m


def _vitae(in_channels: int, drop_path_rate: float, backbone_weights: str | Path | None, **kw) -> ViTAEv2:
    m = ViTAEv2(in_chans=in_channels, drop_path_rate=drop_path_rate, **kw)
    if backbone_weights:
        load_vitae_pretrained(m, backbone_weights)
    return m


def dsqnet_swin_t(num_classes: int = 2, in_channels: int = 3, channels: int = 128, img_size: int = 512,
                  drop_path_rate: float = 0.3, backbone_weights: str | Path | None = None,
                  backbone_args: dict | None = None) -> DSQNet:
    """The released DSQNet with Swin-T. ``backbone_weights``: official or mmseg ImageNet Swin-T file.

    ``backbone_args`` overrides Swin settings (e.g. ``depths`` for a reduced test model).
    """
    bb = _swin(in_channels, drop_path_rate, backbone_weights, **(backbone_args or {}))
    return DSQNet(bb, DSQNetHead(bb.out_channels, channels, num_classes, img_size), num_classes, in_channels)


def dsqnet_vitaev2_s(num_classes: int = 2, in_channels: int = 3, channels: int = 128, img_size: int = 512,
                     drop_path_rate: float = 0.3, backbone_weights: str | Path | None = None,
                     backbone_args: dict | None = None) -> DSQNet:
    """The released DSQNet with ViTAEv2-S (window, no shift). ``backbone_weights``: ``ViTAEv2-S.pth.tar``."""
    bb = _vitae(in_channels, drop_path_rate, backbone_weights, released_layout=True, **(backbone_args or {}))
    return DSQNet(bb, DSQNetHead(bb.out_channels, channels, num_classes, img_size), num_classes, in_channels)


def dsqnet_2408_swin_t(num_classes: int = 2, in_channels: int = 3, channels: int = 64, drop_path_rate: float = 0.3,
                       backbone_weights: str | Path | None = None, backbone_args: dict | None = None) -> DSQNet:
    """The August 2024 DSQNet upload with Swin-T (see :mod:`.head_2408`)."""
    bb = _swin(in_channels, drop_path_rate, backbone_weights, **(backbone_args or {}))
    return DSQNet(bb, DSQNetHead2408(bb.out_channels, channels, num_classes), num_classes, in_channels)


def dsqnet_2408_vitaev2_s(num_classes: int = 2, in_channels: int = 3, channels: int = 64, drop_path_rate: float = 0.3,
                          backbone_weights: str | Path | None = None, backbone_args: dict | None = None) -> DSQNet:
    """The August 2024 DSQNet upload with ViTAEv2-S (see :mod:`.head_2408`)."""
    bb = _vitae(in_channels, drop_path_rate, backbone_weights, released_layout=True, **(backbone_args or {}))
    return DSQNet(bb, DSQNetHead2408(bb.out_channels, channels, num_classes), num_classes, in_channels)


def dsqnet_cx_swin_t(num_classes: int = 2, in_channels: int = 3, channels: int = 192, drop_path_rate: float = 0.3,
                     backbone_weights: str | Path | None = None, backbone_args: dict | None = None,
                     **head_kwargs: Any) -> DSQNet:
    """changekit's DSQNet design (not the paper's code) with Swin-T; see :mod:`.head_cx`."""
    bb = _swin(in_channels, drop_path_rate, backbone_weights, **(backbone_args or {}))
    return DSQNet(bb, DSQHeadCX(bb.out_channels, channels, num_classes, **head_kwargs), num_classes, in_channels)


def dsqnet_cx_vitaev2_s(num_classes: int = 2, in_channels: int = 3, channels: int = 192, drop_path_rate: float = 0.3,
                        backbone_weights: str | Path | None = None, backbone_args: dict | None = None,
                        **head_kwargs: Any) -> DSQNet:
    """changekit's DSQNet design (not the paper's code) with ViTAEv2-S; see :mod:`.head_cx`."""
    bb = _vitae(in_channels, drop_path_rate, backbone_weights, **(backbone_args or {}))
    return DSQNet(bb, DSQHeadCX(bb.out_channels, channels, num_classes, **head_kwargs), num_classes, in_channels)


_DSQNET = "DSQNet README with the released checkpoints (QinZelin/DSQNet 4bda99b..92d02d2, 2024-05-13..08-27)"
register_model("dsqnet_swin-t", dsqnet_swin_t, published=[("LEVIR-CD", 92.01, _DSQNET), ("S2Looking", 66.69, _DSQNET)])
register_model("dsqnet_vitaev2-s", dsqnet_vitaev2_s, published=[("LEVIR-CD", 92.37, _DSQNET), ("S2Looking", 67.08, _DSQNET)])
register_model("dsqnet-2408_swin-t", dsqnet_2408_swin_t)
register_model("dsqnet-2408_vitaev2-s", dsqnet_2408_vitaev2_s)
register_model("dsqnet-cx_swin-t", dsqnet_cx_swin_t)
register_model("dsqnet-cx_vitaev2-s", dsqnet_cx_vitaev2_s)
