"""Change-detection models: one file per family, each registering named configs."""

from changekit.models.registry import build_model, list_models, register_model

__all__ = ["build_model", "list_models", "register_model"]
