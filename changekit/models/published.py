"""Published results of registered models: ``(dataset, change-class F1 in %, source)``, shown by
``changekit models`` and the README. Only figures their sources print; changekit has not retrained them."""

from __future__ import annotations

__all__ = ["PUBLISHED", "published"]

_OPENCD = "open-cd configs/{}/README.md"
_BAN = _OPENCD.format("ban")
_CORLEY = "Corley et al. 2024, authors' repository README (best of 10 seeds)"
_CLIPFORMER = "CLIPFormer repository README (wujiang0156/CLIPformer)"
_DSQNET = "DSQNet README with the released checkpoints (QinZelin/DSQNet 4bda99b..92d02d2, 2024-05-13..08-27)"

PUBLISHED: dict[str, list[tuple[str, float, str]]] = {
    "fc_siam_diff": [("LEVIR-CD", 87.31, _OPENCD.format("fcsn"))],
    "bit_r18": [("LEVIR-CD", 90.26, _OPENCD.format("bit"))],
    "changeformer_mit-b0": [("LEVIR-CD", 90.52, _OPENCD.format("changeformer"))],
    "changeformer_mit-b1": [("LEVIR-CD", 91.11, _OPENCD.format("changeformer"))],
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
    "ban-scd_vit-l14-clip_mit-b0": [("BANDON", 72.57, "BAN repository README (likyoo/BAN)")],
    "ban-scd_vit-l14-clip_mit-b2": [("BANDON", 74.77, "BAN repository README (likyoo/BAN)")],
    "dsqnet_swin-t": [("LEVIR-CD", 92.01, _DSQNET), ("S2Looking", 66.69, _DSQNET)],
    "dsqnet_vitaev2-s": [("LEVIR-CD", 92.37, _DSQNET), ("S2Looking", 67.08, _DSQNET)],
    "clipformer_swin-t_vit-b16": [("LEVIR-CD", 92.24, _CLIPFORMER), ("WHU-CD", 94.49, _CLIPFORMER),
                                  ("SYSU-CD", 83.57, _CLIPFORMER)],
    "unet_r50_early": [("LEVIR-CD", 89.91, _CORLEY), ("WHU-CD (official split)", 82.00, _CORLEY)],
    "unet_r50_siam-diff": [("LEVIR-CD", 90.15, _CORLEY), ("WHU-CD (official split)", 82.48, _CORLEY)],
}


def published(arch: str) -> list[tuple[str, float, str]]:
    """The published results of ``arch`` (empty when its sources print none)."""
    return list(PUBLISHED.get(arch, []))
