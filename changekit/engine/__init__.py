"""Training, evaluation and prediction with Lightning (see docs/training.md)."""

from changekit.engine.inference import predict_logits, slide_windows


def load_checkpoint_model(path):
    """``(eval-mode model, info)`` from a changekit checkpoint; see :func:`changekit.engine.task.load_checkpoint_model`."""
    from changekit.engine.task import load_checkpoint_model as _load

    return _load(path)


__all__ = ["load_checkpoint_model", "predict_logits", "slide_windows"]
