"""Training, evaluation and prediction with Lightning (see docs/training.md).

Models from checkpoints without Lightning: :func:`changekit.load_model`.
"""

from changekit.engine.inference import predict_logits, slide_windows

__all__ = ["predict_logits", "slide_windows"]
