"""``ChangeEnsemble``: several trained models of one architecture (the same recipe, other seeds) as one model.

Its output is the log of the members' mean class probability, so a softmax of it (what every consumer of logits
does: scenes, tests, thresholds) gives the mean probability and an argmax the class of highest mean probability.
Averaging seeds takes out the run-to-run spread of a small model trained on little data (docs/results.md).

A ``.safetensors`` file records ``ensemble: K`` beside the members' common record, with the members' weights under
``members.0.``, ``members.1.``, ...: ``changekit export A.ckpt B.ckpt C.ckpt --out M.safetensors`` writes one,
``changekit.load_model`` reads it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from changekit.errors import ConfigError
from changekit.models.base import ChangekitModel

__all__ = ["ChangeEnsemble", "common_record"]

#: record keys the members of an ensemble must share: they read the same data the same way
SHARED = ("arch", "arch_args", "num_classes", "in_channels", "mean", "std", "bands", "units", "standardize", "task")


class ChangeEnsemble(ChangekitModel):
    """The mean class probability of ``members`` (changekit models of one kind), as log-probabilities."""

    def __init__(self, members: Sequence[ChangekitModel]) -> None:
        if len(members) < 2:
            raise ConfigError(f"an ensemble needs at least 2 models, got {len(members)}")
        first = members[0]
        super().__init__(first.num_classes, first.in_channels)
        self.task, self.num_dates, self.text_inputs = first.task, first.num_dates, first.text_inputs
        self.fast_precisions = first.fast_precisions
        self.inference_channels_last = first.inference_channels_last
        self.members = nn.ModuleList(members)

    def fuse_for_inference(self) -> int:
        return sum(m.fuse_for_inference() for m in self.members)

    def forward_decoder(self, *images: torch.Tensor, **inputs: Any) -> torch.Tensor:
        prob = torch.stack([m(*images, **inputs).float().softmax(1) for m in self.members]).mean(0)
        return prob.clamp_min(torch.finfo(prob.dtype).tiny).log()


def common_record(records: Sequence[dict[str, Any]], sources: Sequence[str]) -> dict[str, Any]:
    """The record of an ensemble of models with these records: the first one's, once every :data:`SHARED` key
    agrees; a ConfigError naming the first key and file that differ otherwise."""
    for rec, src in zip(records, sources):
        if rec.get("ensemble"):
            raise ConfigError(f"{src} is already an ensemble of {rec['ensemble']}; give its members' checkpoints")
    first = records[0]
    for rec, src in zip(records[1:], sources[1:]):
        for key in SHARED:
            if rec.get(key) != first.get(key):
                raise ConfigError(f"{src}: its {key} ({rec.get(key)!r}) differs from {sources[0]}'s "
                                  f"({first.get(key)!r}); an ensemble takes models trained by one recipe")
    return dict(first) | {"ensemble": len(records)}
