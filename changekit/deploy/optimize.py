"""``optimize_for_inference``: the same model, run in reduced precision (and optionally compiled) for inference.

``optimize_for_inference(model, precision="bf16")`` returns a module whose ``forward`` takes what the model takes and
returns float32 logits:

* ``fp32``: the model in eval mode without gradients — the reference arithmetic;
* ``bf16``: weights stored in bfloat16 and the forward run under bfloat16 autocast (CPUs with native bf16 —
  AVX-512-BF16 / AMX — and CUDA GPUs that support it); elsewhere a warning and fp32;
* ``fp16``: CUDA only (half weights under fp16 autocast); on a CPU a warning and fp32 (CPU half kernels are slow);
* ``int8``: CPU only. The large linear layers (weight matrices of at least :data:`INT8_MIN_WEIGHTS` values: a
  frozen foundation model's attention and MLP projections) become dynamically quantised int8 layers
  (``torch.ao`` with per-channel weights; activations quantised per call, accumulation in int32; oneDNN's
  kernels where the CPU has AMX, fbgemm's elsewhere: :func:`int8_engine`); norms, attention, convolutions and the
  decoder stay in fp32. On CUDA a warning and fp32;
* ``auto``: :func:`auto_precision` picks the fastest of those that the hardware runs natively and that agreement
  tests validate for the model's family (``ChangekitModel.fast_precisions``): bf16 where native, else int8 where
  validated, else fp32;
* ``compile=True``: ``torch.compile`` on top (first calls are slow while it compiles).
* layout: on CPU, a family whose convolutions measured faster on channels-last (NHWC) maps
  (``ChangekitModel.inference_channels_last``: the FC networks, the U-Nets, BiT, MCAT-UNet) gets its weights and
  images converted to that layout (1.1-1.6x in fp32, 1.9-2.6x in bf16, ``benchmarks/channels_last.py``); the
  logits come back contiguous (NCHW). The same arithmetic in another order: outputs agree to fp32 rounding;
* folding: a family's ``fuse_for_inference`` rewrites the eval-mode model first (the FC networks fold their batch
  norms into the convolutions before them: 1.1x in fp32, 1.16x in bf16), again equal to fp32 rounding.

Storing the weights in the reduced type (not only autocasting) avoids re-casting every weight on every call, which
on CPU costs as much as the matmuls of a small decoder. Norms, softmax and the final resize still run in float32
where autocast keeps them there; the logits come back as float32. Agreement with fp32 is checked by tests (argmax
maps ≥ 99.9 % equal in bf16 on the demo model's test split and on the BAN golden inputs, ≥ 99.5 % in int8 with
either int8 engine); speeds are measured by ``../shared/bench/perf_ban.py`` and ``benchmarks/int8_engines.py``.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
import torch.nn as nn

from changekit.errors import ConfigError

__all__ = ["optimize_for_inference", "InferenceModel", "cpu_has_native_bf16", "resolve_precision", "auto_precision",
           "quantize_linear_int8", "int8_engine", "INT8_MIN_WEIGHTS"]

PRECISIONS = ("fp32", "bf16", "fp16", "int8", "auto")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: the smallest weight matrix (in x out values) that int8 quantises: below it, quantising the activations on every
#: call costs more than the int8 product saves (MiT-b0's 32..256-wide layers), and small layers are where
#: quantisation error matters most
INT8_MIN_WEIGHTS = 2**16


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


def auto_precision(model: Any, device: torch.device | str) -> tuple[str, str]:
    """``(precision, why)``: the fastest precision ``device`` runs natively that the model's family is validated for
    (its ``fast_precisions``; a module that is not a changekit model, or an exported graph, has none: fp32)."""
    kind = torch.device(device).type
    validated = tuple(getattr(model, "fast_precisions", ()) or ())
    family = type(model).__name__
    if not validated:
        return "fp32", f"{family} has no reduced precision validated against fp32"
    if kind == "cuda":
        if "bf16" in validated and torch.cuda.is_bf16_supported():
            return "bf16", "the GPU runs bfloat16 natively"
        return "fp32", "no reduced precision validated for this GPU"
    if "bf16" in validated and cpu_has_native_bf16():
        return "bf16", "the CPU runs bfloat16 natively (AVX-512-BF16 / AMX)"
    if "int8" in validated and "x86" in torch.backends.quantized.supported_engines:
        why = "no native bfloat16 on this CPU" if "bf16" in validated else "bf16 not validated for " + family
        return "int8", f"{why}; int8 linear layers validated for {family} ({int8_engine()} kernels)"
    return "fp32", f"no native bfloat16 on this CPU and no int8 validated for {family}"


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision that will actually run on ``device`` (with a warning when the request cannot be met)."""
    if precision not in PRECISIONS or precision == "auto":
        raise ConfigError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    if precision == "int8" and kind != "cpu":
        warnings.warn(f"int8 runs on CPUs only (dynamic int8 linear layers): running fp32 on {kind}", stacklevel=3)
        return "fp32"
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

    def __init__(self, model: nn.Module, precision: str, device_type: str, reason: str | None = None,
                 channels_last: bool = False) -> None:
        super().__init__()
        self.model, self.precision, self.device_type = model, precision, device_type
        self.precision_reason = reason  # why ``auto`` chose ``precision`` (None when it was asked for)
        self.channels_last = channels_last  # images go in as NHWC (the model's weights already are)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.channels_last:
            args = tuple(a.contiguous(memory_format=torch.channels_last)
                         if isinstance(a, torch.Tensor) and a.dim() == 4 else a for a in args)
        reduced = self.precision in _DTYPES
        with torch.inference_mode(), torch.autocast(self.device_type, dtype=_DTYPES.get(self.precision), enabled=reduced):
            out = self.model(*args, **kwargs)
        if reduced:
            out = out.float()
        return out.contiguous() if self.channels_last and isinstance(out, torch.Tensor) else out

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)


def quantize_linear_int8(model: nn.Module, min_weights: int | None = None) -> int:
    """Replace (in place) every ``nn.Linear`` with at least ``min_weights`` (default :data:`INT8_MIN_WEIGHTS`) weight
    values by a dynamically quantised int8 layer with per-channel weights; returns how many were replaced."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    min_weights = INT8_MIN_WEIGHTS if min_weights is None else min_weights
    layers = {n: m for n, m in model.named_modules() if type(m) is nn.Linear and m.weight.numel() >= min_weights}
    bad = [n for n, m in layers.items() if not torch.isfinite(m.weight).all()]
    if bad:  # int8 cannot represent NaN/inf: an uninitialised model (fm_init="empty") or damaged weights
        warnings.warn(f"{len(bad)} linear layer(s) hold non-finite weights (e.g. {bad[0]}); they are quantised with "
                      "those values set to 0", stacklevel=3)
        with torch.no_grad():
            for n in bad:
                layers[n].weight.nan_to_num_(0.0, 0.0, 0.0)
    if layers:
        # the engine packs the weights, and the packed layers keep its kernels whatever the engine is later
        before, torch.backends.quantized.engine = torch.backends.quantized.engine, int8_engine()
        try:
            with warnings.catch_warnings():  # torch.ao's own notice that its quantised tensors will move to torchao
                warnings.filterwarnings("ignore", message=".*quantiz.*deprecated", category=UserWarning)
                quantize_dynamic(model, {n: per_channel_dynamic_qconfig for n in layers}, dtype=torch.qint8,
                                 inplace=True)
        finally:
            torch.backends.quantized.engine = before
    return len(layers)


def int8_engine() -> str:
    """The quantised engine whose int8 linear kernels are fastest here: ``onednn`` where oneDNN may use AMX (2.3x
    faster than fbgemm on ViT-B's layers), else ``x86`` (fbgemm; oneDNN measured 1.6-1.7x slower with AVX2-VNNI or
    AVX-512 without VNNI, equal under AVX2, and only 1.2x faster with AVX-512-VNNI, docs/performance.md).
    ``CHANGEKIT_INT8_ENGINE=x86|fbgemm|onednn`` overrides the choice."""
    engines = torch.backends.quantized.supported_engines
    forced = os.environ.get("CHANGEKIT_INT8_ENGINE", "").strip()
    if forced:
        if forced not in engines:
            raise ConfigError(f"CHANGEKIT_INT8_ENGINE={forced}: not a quantised engine of this PyTorch build; "
                              f"use one of {', '.join(e for e in engines if e != 'none')}")
        return forced
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").strip().upper()  # a cap below AMX leaves oneDNN without it
    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)  # private: absent from older builds
    amx = has_amx() and ("AMX" in cap or cap in ("ALL", "DEFAULT", ""))
    if amx and "onednn" in engines:
        return "onednn"
    return "x86" if "x86" in engines else "fbgemm"


def optimize_for_inference(model: nn.Module, precision: str = "fp32", compile: bool = False,  # noqa: A002
                           device: torch.device | str | None = None) -> InferenceModel:
    """``model`` (moved to nothing; it stays where it is) in eval mode, gradients off, run in ``precision``.

    ``device`` defaults to where the model's parameters are. Returns an :class:`InferenceModel` (``.precision`` is
    what runs; with ``auto``, ``.precision_reason`` says why); the original module is modified in place (eval mode;
    batch norms folded where the family does so; for bf16/fp16 its floating-point weights are cast, for int8 its
    large linear layers are quantised; convolutional families go channels-last on CPU); gradients are
    off inside its forward (``torch.inference_mode``).
    """
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    reason = None
    if precision == "auto":
        precision, reason = auto_precision(model, device)
    run = resolve_precision(precision, device)
    model.eval()
    fuse = getattr(model, "fuse_for_inference", None)  # a changekit family's exact rewrite (BN folding)
    if callable(fuse):
        fuse()
    if run == "int8":
        quantize_linear_int8(model)
    elif run != "fp32":
        model.to(_DTYPES[run])
    kind = torch.device(device).type
    channels_last = kind == "cpu" and bool(getattr(model, "inference_channels_last", False))
    if channels_last:
        model.to(memory_format=torch.channels_last)
    wrapped = InferenceModel(model, run, kind, reason, channels_last)
    if compile:
        wrapped.model = torch.compile(model)
    return wrapped
