"""Per family: the keyword arguments that build a registered model at test width without changing its
structure (the contract and export tests build every registered model this way)."""

from __future__ import annotations

import torch

import changekit
from changekit.models.registry import family_of

# BAN: the named foundation model at its real width but 3 blocks on a 32 px input, left uninitialised and then
# zeroed (random init of a ViT-L takes seconds; its numerics are the goldens' job, the contract is shapes)
_TINY_FM = dict(fm_num_layers=3, fm_out_indices=(0, 1, 2), fm_img_size=32, fm_init="empty")
#: Per family: keyword arguments that shrink a model to test width without changing its structure.
TINY: dict[str, dict] = {
    "fc_siam": {},
    "bit": {"head": {"token_len": 4}},
    "changeformer": {"drop_path_rate": 0.0},
    "ban": _TINY_FM,
    "dsqnet": {"channels": 32, "drop_path_rate": 0.0},
    "unet": {"decoder_channels": (32, 16, 16, 8, 8)},
    "mcat_unet": {"drop_path_rate": 0.0},
    "clipformer": dict(
        backbone=dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), drop_path_rate=0.0),
        text=dict(width=64, heads=1, layers=1, embed_dim=32), visual_dim=32, channels=32, context_width=32,
        context_heads=2, context_layers=1, decoder=dict(num_heads=2),
    ),
}
_TINY_SWIN = dict(embed_dim=12, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))
_TINY_VITAE = dict(embed_dims=(8, 8, 16, 32), token_dims=(8, 16, 32, 64), NC_depth=(1, 1, 1, 1), NC_heads=(1, 2, 4, 8),
                   RC_heads=(1, 1, 2, 4), NC_group=(1, 4, 8, 16), RC_group=(1, 2, 4, 8))
TINY_BACKBONES = {f"{v}_{b}": args for v in ("dsqnet", "dsqnet-2408", "dsqnet-cx")
                   for b, args in (("swin-t", _TINY_SWIN), ("vitaev2-s", _TINY_VITAE))}
#: the August 2024 DSQNet head only runs at its released width
_TINY_OVERRIDES = {"dsqnet-2408_swin-t": {"channels": 64}, "dsqnet-2408_vitaev2-s": {"channels": 64}}


def tiny_model(name: str) -> torch.nn.Module:
    kw = dict(TINY[family_of(name)])
    kw.update(_TINY_OVERRIDES.get(name, {}))
    if name in TINY_BACKBONES:
        kw["backbone_args"] = TINY_BACKBONES[name]
    model = changekit.build_model(name, **kw)
    if kw.get("fm_init") == "empty":
        for p in model.image_encoder.parameters():
            p.data.zero_()
    return model
