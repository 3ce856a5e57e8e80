"""Text towers used by language-driven change-detection models (CLIP's text transformer, tokenizer helpers)."""

from changekit.models.text.clip_text import (
    CLIPTextContextEncoder,
    load_clip_text_weights,
    tokenize,
)

__all__ = ["CLIPTextContextEncoder", "load_clip_text_weights", "tokenize"]
