"""Metrics under one protocol (docs/metrics in the README): binary change (:mod:`.binary`), semantic change
(:mod:`.scd`) and scoring of saved maps (:mod:`.maps`)."""

from changekit.metrics.binary import (
    SUMMARY_KEYS,
    ConfusionMatrix,
    confusion_matrix,
    format_metrics_table,
    format_percent,
    json_ready,
    metrics_from_confusion,
)
from changekit.metrics.maps import score_maps
from changekit.metrics.scd import (
    SCD_SUMMARY_KEYS,
    SCDConfusion,
    format_scd_table,
    scd_metrics_from_confusion,
    sek_from_confusion,
)

__all__ = [
    "SUMMARY_KEYS", "ConfusionMatrix", "confusion_matrix", "format_metrics_table", "format_percent", "json_ready",
    "metrics_from_confusion", "score_maps",
    "SCD_SUMMARY_KEYS", "SCDConfusion", "format_scd_table", "scd_metrics_from_confusion", "sek_from_confusion",
]
