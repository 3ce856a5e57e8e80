"""What the backbones share: their references' initialisation (Swin, ViTAEv2, MiT, MSCAN) and the reading of
their ImageNet weight files (a local file, a state dict, a URL or ``"imagenet"``)."""

import math
from collections.abc import Mapping
from pathlib import Path

import torch
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


def mmseg_conv_init(module: nn.Module) -> None:
    """mmseg's MiT / MSCAN ``init_weights``: :func:`transformer_init` plus He-normal (fan-out, per group) convs with
    zero biases, over every submodule of ``module``."""
    for m in module.modules():
        transformer_init(m)
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def read_imagenet_weights(weights: str | Path | Mapping[str, torch.Tensor], urls: Mapping[str, str], size: str | None,
                          family: str) -> tuple[str, dict[str, torch.Tensor]]:
    """``(source, state dict)`` of a backbone's ImageNet weights: a state dict, a local file, an ``http(s)://`` URL, or
    ``"imagenet"`` for ``urls[size]`` (downloaded through ``torch.hub`` into its cache: the only path that touches the
    network, and only when asked)."""
    from changekit.checkpoints import extract_state_dict, read_state_dict
    from changekit.errors import ChangekitError

    if isinstance(weights, Mapping):
        return "state dict", extract_state_dict(weights)
    text = str(weights)
    if text == "imagenet":
        if size not in urls:
            raise ChangekitError(f"no ImageNet {family} weights known for size {size!r}; known: {', '.join(urls)}")
        text = urls[size]
    if text.startswith(("http://", "https://")):
        return text, extract_state_dict(torch.hub.load_state_dict_from_url(text, map_location="cpu", weights_only=True), text)
    return text, read_state_dict(text)
