"""``optimize_for_inference``: the same model, run in reduced precision (and optionally compiled) for inference.

``optimize_for_inference(model, precision="bf16")`` returns a module whose ``forward`` takes what the model takes and
returns float32 logits:

* ``fp32``: the model in eval mode without gradients — the reference path, unchanged;
* ``bf16``: weights stored in bfloat16 and the forward run under bfloat16 autocast (CPUs with native bf16 —
  AVX-512-BF16 / AMX — and CUDA GPUs that support it); elsewhere a warning and fp32;
* ``fp16``: CUDA only (half weights under fp16 autocast); on a CPU a warning and fp32 (CPU half kernels are slow);
* ``compile=True``: ``torch.compile`` on top (first calls are slow while it compiles).

Storing the weights in the reduced type (not only autocasting) avoids re-casting every weight on every call, which
on CPU costs as much as the matmuls of a small decoder. Norms, softmax and the final resize still run in float32
where autocast keeps them there; the logits come back as float32. Agreement with fp32 is checked by tests (argmax
maps ≥ 99.9 % equal on the demo model's test split and on the BAN golden inputs) and measured by
``benchmarks/precision.py``.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
import torch.nn as nn

from changekit.errors import ConfigError

__all__ = ["optimize_for_inference", "InferenceModel", "cpu_has_native_bf16", "resolve_precision"]

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """True when oneDNN reports bfloat16 hardware support (AVX-512-BF16 or AMX). ``CHANGEKIT_CPU_BF16=0`` (or ``1``)
    overrides it, so that an AVX-512 machine can stand in for an AVX2 one in tests and benchmarks (with
    ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``)."""
    forced = os.environ.get("CHANGEKIT_CPU_BF16")
    if forced is not None and forced.strip() in ("0", "1"):
        return forced.strip() == "1"
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision that will actually run on ``device`` (with a warning when the request cannot be met)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    if precision == "bf16":
        ok = torch.cuda.is_bf16_supported() if kind == "cuda" else kind == "cpu" and cpu_has_native_bf16()
        if not ok:
            warnings.warn(f"bf16 requested but {kind} has no native bfloat16 support: running fp32", stacklevel=3)
            return "fp32"
    if precision == "fp16" and kind != "cuda":
        warnings.warn(f"fp16 runs on CUDA only (CPU half kernels are slow): running fp32 on {kind}", stacklevel=3)
        return "fp32"
    return precision


class InferenceModel(nn.Module):
    """Wraps a model for inference in ``precision``; attributes not found here are looked up on the model."""

    def __init__(self, model: nn.Module, precision: str, device_type: str) -> None:
        super().__init__()
        self.model, self.precision, self.device_type = model, precision, device_type

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.precision == "fp32":
            with torch.inference_mode():
                return self.model(*args, **kwargs)
        dtype = _DTYPES[self.precision]
        with torch.inference_mode(), torch.autocast(self.device_type, dtype=dtype):
            out = self.model(*args, **kwargs)
        return out.float()

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)


def optimize_for_inference(model: nn.Module, precision: str = "fp32", compile: bool = False,  # noqa: A002
                           device: torch.device | str | None = None) -> InferenceModel:
    """``model`` (moved to nothing; it stays where it is) in eval mode, gradients off, run in ``precision``.

    ``device`` defaults to where the model's parameters are. Returns an :class:`InferenceModel`; the original module
    is modified in place (eval mode, and for bf16/fp16 its floating-point weights are cast); gradients are off inside
    its forward (``torch.inference_mode``).
    """
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    run = resolve_precision(precision, device)
    model.eval()
    if run != "fp32":
        model.to(_DTYPES[run])
    wrapped = InferenceModel(model, run, torch.device(device).type)
    if compile:
        wrapped.model = torch.compile(model)
    return wrapped
