"""The initialisation shared by the transformer backbones (Swin, ViTAEv2, MiT), as their references do."""

import torch.nn as nn
from timm.layers import trunc_normal_


def transformer_init(m: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear weights with zero biases; unit LayerNorms. Use with ``module.apply``."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
