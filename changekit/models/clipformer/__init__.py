"""CLIPFormer: the model, its prompts and registered config (:mod:`.model`) and its decoding side, fusion
streams and text-guided CSWin decoder (:mod:`.decoder`)."""

from changekit.models.clipformer.model import (
    BACKGROUND_PROMPT,
    FALLBACK_CLASSES,
    FOREGROUND_PROMPT,
    RS_CLASSES_56,
    CLIPFormer,
    ContextDecoder,
    GlobalLocalPool,
    build_prompts,
    clipformer_swin_t_vit_b16,
)

__all__ = [
    "BACKGROUND_PROMPT", "FALLBACK_CLASSES", "FOREGROUND_PROMPT", "RS_CLASSES_56", "CLIPFormer", "ContextDecoder",
    "GlobalLocalPool", "build_prompts", "clipformer_swin_t_vit_b16",
]
