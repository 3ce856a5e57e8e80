"""Training, evaluation and prediction with Lightning (see docs/training.md).

Models from checkpoints without Lightning: :func:`changekit.load_model`.
"""

import logging

from changekit.engine.inference import predict_logits, slide_windows


class _NoAdverts(logging.Filter):
    """Drops Lightning's tip advertising its cloud logger, printed by every run that does not use it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdverts())

__all__ = ["predict_logits", "slide_windows"]
