"""Frozen foundation-model image encoders (BAN's FMs) and their weight-format loaders."""

from changekit.models.foundation.vit import (
    FM_PRESETS,
    FrozenViT,
    build_fm,
    default_out_indices,
    preset_fm,
    timm_fm,
    vit_fm,
)

__all__ = ["FM_PRESETS", "FrozenViT", "build_fm", "default_out_indices", "preset_fm", "timm_fm", "vit_fm"]
