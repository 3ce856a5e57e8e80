"""ONNX export and ONNX Runtime inference (docs/deploy.md).

:func:`export_onnx` writes a graph with inputs ``t1``, ``t2`` (B, C, H, W), already normalised (a single-date
segmentation model such as MCAT-UNet: one input, ``image``), and output ``logits`` (B, num_classes, H, W). The batch is always dynamic; H and W are dynamic where the model's graph
allows it. That is decided by checking, not assumed: the dynamic graph is run by ONNX Runtime at a second size
and compared with PyTorch; if it disagrees (sizes traced into reshapes, as in MiT attention), a fixed-size graph
is written instead and its size recorded. Every export is checked against PyTorch at the export size; a graph
that disagrees is never written. ``metadata_props`` carry what inference needs (see :data:`METADATA_KEYS`).

:class:`OnnxModel` runs such a file with ONNX Runtime behind the ``model(t1, t2)`` (or ``model(image)``) interface,
so ``changekit scene --ckpt model.onnx`` streams a scene through it like a PyTorch checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from changekit.atomic import atomic_write
from changekit.errors import ChangekitError, ConfigError, first_line
from changekit.models.record import check_model_record

__all__ = ["ExportError", "export_onnx", "OnnxModel", "read_metadata", "METADATA_KEYS"]

#: What an exported file records (JSON values): what a reader needs to feed it and to read its output.
METADATA_KEYS = ("changekit_version", "arch", "task", "num_classes", "class_names", "palette", "in_channels", "bands",
                 "mean", "std", "units", "window", "dynamic_size", "fixed_size", "fixed_batch", "precision",
                 "text_classes", "standardize", "threshold")
#: the graph's input names, by task
INPUT_NAMES = {"change": ["t1", "t2"], "segmentation": ["image"]}
#: Needed to run a scene from the file alone (the others are informative).
REQUIRED_FOR_SCENES = ("in_channels", "mean", "std")


class ExportError(ChangekitError):
    """A model (or one of its modules) that cannot be exported faithfully."""


def _ort_session(path: str | os.PathLike, device: str = "cpu"):
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError("--device cuda: this onnxruntime has no CUDA execution provider (install onnxruntime-gpu)")
        providers.insert(0, "CUDAExecutionProvider")
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # failures reach the caller as exceptions; no log spam
    try:
        return ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as e:  # onnxruntime's own error types: a graph it cannot load
        raise ConfigError(f"{path}: ONNX Runtime cannot load this graph ({_first_line(e)}); export it again with "
                          "`changekit export`") from None


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / max(float(np.abs(b).max()), 1e-6))


def _trace_export(model: nn.Module, example: tuple[torch.Tensor, ...], path: Path, opset: int,
                  dynamic_hw: bool, dynamic_batch: bool = True) -> None:
    axes = ({0: "batch"} if dynamic_batch else {}) | ({2: "height", 3: "width"} if dynamic_hw else {})
    names = INPUT_NAMES["segmentation" if len(example) == 1 else "change"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values: the ORT check below decides
        torch.onnx.export(model, example, str(path), input_names=names, output_names=["logits"],
                          dynamic_axes={**{n: axes for n in names}, "logits": axes}, opset_version=opset,
                          do_constant_folding=True, dynamo=False)


def _check(model: nn.Module, path: Path, sizes: Sequence[tuple[int, int, int]], channels: int, tol: float) -> float:
    """Worst relative error of the ONNX graph against PyTorch over ``(batch, h, w)`` inputs."""
    session = _ort_session(path)
    names = [i.name for i in session.get_inputs()]
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for b, h, w in sizes:
        xs = [torch.randn(b, channels, h, w, generator=g) for _ in names]
        with torch.no_grad():
            ref = model(*xs).float().numpy()
        out = session.run(None, {n: x.numpy() for n, x in zip(names, xs)})[0]
        if out.shape != ref.shape:
            return float("inf")
        worst = max(worst, _rel_err(out, ref))
    return worst


class _LogitsOnly(nn.Module):
    """The exported forward: two dates (or a segmentation model's one image) in, the logits out (class lists of
    language models baked in)."""

    def __init__(self, model: nn.Module, text_classes: Sequence[str] | None) -> None:
        super().__init__()
        self.model, self.text_classes = model, list(text_classes) if text_classes else None

    def forward(self, *images: torch.Tensor) -> torch.Tensor:
        if self.text_classes is not None:
            n = images[0].shape[0]
            out = self.model(*images, [self.text_classes] * n, [self.text_classes] * n)
        else:
            out = self.model(*images)
        return out[0] if isinstance(out, (tuple, list)) else out


def export_onnx(model: nn.Module, out: str | os.PathLike, *, size: Sequence[int] = (512, 512), opset: int = 17,
                precision: str = "fp32", info: Mapping[str, Any] | None = None, tol: float = 1e-4,
                text_classes: Sequence[str] | None = None, try_dynamic: bool = True) -> dict[str, Any]:
    """Export ``model`` to ``out`` (see the module docstring). ``info``: what ``changekit.load_model`` records
    (mean/std, bands, units ...), written into the metadata. Returns the metadata and ``error`` (the checked
    relative error). Language models (CLIPFormer) get their class lists baked in: ``text_classes``, else none (the
    prompt without class names, as the model uses without class lists); the metadata records which. ``try_dynamic=False`` writes a fixed-size graph without trying a dynamic one."""
    import onnx

    if precision not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"--precision {precision!r}: use fp32, fp16 or int8")
    h, w = int(size[0]), int(size[-1])
    if h < 32 or w < 32:
        raise ConfigError(f"--size {h} {w}: export at 32 px or more")
    info = dict(info or getattr(model, "changekit_info", {}) or {})
    model = model.eval().float()
    c = int(getattr(model, "in_channels", info.get("in_channels") or 3))
    if text_classes is None and hasattr(model, "text_encoder"):
        text_classes = []
    wrapped = _LogitsOnly(model, text_classes if hasattr(model, "text_encoder") else None).eval()
    task = getattr(model, "task", None) or info.get("task") or "change"
    example = tuple(torch.randn(1, c, h, w) for _ in INPUT_NAMES.get(task, INPUT_NAMES["change"]))
    out = Path(out)
    h2, w2 = h + 32, w + 64  # the second size a dynamic graph must also get right
    with atomic_write(out) as tmp:
        dynamic_err = float("inf")
        if try_dynamic:
            try:
                _trace_export(wrapped, example, tmp, opset, dynamic_hw=True)
                dynamic_err = _check(wrapped, tmp, [(1, h, w), (2, h2, w2)], c, tol)
            except Exception:  # noqa: BLE001 - any tracer/runtime failure of the dynamic graph: try a fixed size
                dynamic_err = float("inf")
        dynamic, batch = dynamic_err <= tol, None
        if not dynamic:
            try:
                _trace_export(wrapped, example, tmp, opset, dynamic_hw=False)
                if not _check_quietly(wrapped, tmp, [(2, h, w)], c, tol):  # the batch size traced in too
                    _trace_export(wrapped, example, tmp, opset, dynamic_hw=False, dynamic_batch=False)
                    batch = 1
            except Exception as e:  # noqa: BLE001 - name the module the exporter stopped at
                raise ExportError(f"{type(model).__name__} cannot be exported to ONNX: {_first_line(e)}") from None
        err = _check(wrapped, tmp, [(1, h, w)] if batch else [(1, h, w), (2, h, w)], c, tol)
        if not err <= tol:
            raise ExportError(f"{type(model).__name__}: the ONNX graph differs from PyTorch by {err:.2g} (relative) at "
                              f"{h}x{w}; not written (an operator exports unfaithfully)")
        graph = onnx.load(str(tmp))
        if precision == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            graph = _sorted(convert_float_to_float16(graph, keep_io_types=True))
        elif precision == "int8":
            graph = _quantize_int8(tmp)
            quantized = sum(n.op_type in ("MatMulInteger", "ConvInteger") for n in graph.graph.node)
        from changekit.version import __version__

        num_classes = int(getattr(model, "num_classes", info.get("num_classes") or 2))
        legend = [None, None]
        if task == "segmentation":
            from changekit.data.presets import class_legend

            legend = class_legend(info, num_classes)
        meta = {
            "changekit_version": __version__, "arch": info.get("arch") or getattr(model, "changekit_spec", {}).get("arch"),
            "task": task, "num_classes": num_classes, "class_names": legend[0], "palette": legend[1], "in_channels": c,
            "bands": info.get("bands"), "mean": info.get("mean"), "std": info.get("std"), "units": info.get("units"),
            "window": [h, w], "dynamic_size": dynamic, "fixed_size": None if dynamic else [h, w], "fixed_batch": batch,
            "precision": precision, "text_classes": list(text_classes) if hasattr(model, "text_encoder") else None,
            "standardize": info.get("standardize"), "threshold": info.get("threshold"),
        }
        for k, v in meta.items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = k, json.dumps(v)
        onnx.checker.check_model(graph)
        onnx.save(graph, str(tmp))
        if precision != "fp32":  # reduced precision: the difference is reported, agreement is tested
            err = _check(wrapped, tmp, [(1, h, w)], c, tol=1.0)
    return {**meta, "error": err, "path": str(out), **({"quantized_layers": quantized} if precision == "int8" else {})}


def _quantize_int8(path: Path):
    """The graph at ``path`` with its large MatMul/Gemm weights (at least ``INT8_MIN_WEIGHTS`` values, as
    ``optimize_for_inference(..., "int8")`` picks them) dynamically quantised by ONNX Runtime's quantiser:
    per-channel int8 weights, activations quantised per call."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from changekit.deploy.optimize import INT8_MIN_WEIGHTS

    graph = onnx.load(str(path))
    sizes = {t.name: int(np.prod(t.dims)) for t in graph.graph.initializer}
    small = [n.name for n in graph.graph.node if n.op_type in ("MatMul", "Gemm")
             and sizes.get(n.input[1] if len(n.input) > 1 else "", 0) < INT8_MIN_WEIGHTS]
    quantized = path.with_name(path.name + ".int8")
    logging.disable(logging.WARNING)  # the quantiser's advice to pre-process, logged on the root logger
    try:
        quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=small)
        return onnx.load(str(quantized))
    finally:
        logging.disable(logging.NOTSET)
        quantized.unlink(missing_ok=True)


def _sorted(model):
    """The graph's nodes in topological order (the fp16 converter appends its input casts at the end)."""
    nodes = list(model.graph.node)
    known = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    ordered: list = []
    while nodes:
        ready = [n for n in nodes if all(i in known for i in n.input)]
        if not ready:
            raise ExportError("the fp16 graph has a cycle; export in fp32")
        for n in ready:
            ordered.append(n)
            known.update(n.output)
        nodes = [n for n in nodes if n not in ready]
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    return model


def _check_quietly(model: nn.Module, path: Path, sizes, channels: int, tol: float) -> bool:
    try:
        return _check(model, path, sizes, channels, tol) <= tol
    except Exception:  # noqa: BLE001 - ONNX Runtime refusing the shape is a "no"
        return False


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {first_line(e, 400)}"[:400]


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The changekit metadata of an ONNX file (keys absent from it are missing from the result); a file that is no
    ONNX model is a ConfigError naming it."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: the bytes are not an ONNX model
        raise ConfigError(f"{path}: not an ONNX model ({type(e).__name__}); give a file written by `changekit "
                          "export`, or a changekit checkpoint") from None
    out = {}
    for prop in graph.metadata_props:
        try:
            out[prop.key] = json.loads(prop.value)
        except ValueError:
            out[prop.key] = prop.value
    return out


def _check_graph_io(path: Path, session) -> None:
    """Inputs and output a scene can feed and read: float tensors of rank 4 (batch, bands, height, width)."""
    for io in [*session.get_inputs(), *session.get_outputs()[:1]]:
        if io.type != "tensor(float)" or len(io.shape or ()) != 4:
            raise ConfigError(f"{path}: {io.name} is a {io.type} of shape {io.shape}, not a float tensor of rank 4 "
                              "(batch, bands, height, width); export it with `changekit export`")


class OnnxModel:
    """An exported graph behind the ``model(t1, t2) -> logits`` interface, or ``model(image)`` for a segmentation
    model (ONNX Runtime; CPU, or CUDA when asked and available). ``changekit_info`` holds the file's metadata,
    completed by ``overrides`` (mean, std, bands)."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu", overrides: Mapping[str, Any] | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such ONNX file")
        meta = read_metadata(path)
        self.path, self.session = path, _ort_session(path, device)
        names = [i.name for i in self.session.get_inputs()]
        task = next((t for t, want in INPUT_NAMES.items() if names == want), None)
        if task is None:
            raise ConfigError(f"{path}: inputs are {names}, not (t1, t2) or (image,); export it with `changekit export`")
        self.task, self.input_names = task, names
        _check_graph_io(path, self.session)
        info = {k: meta.get(k) for k in METADATA_KEYS}
        info["task"] = task
        for k, v in (overrides or {}).items():
            if v is not None:
                info[k] = v
        if info.get("in_channels") is None:
            shape = self.session.get_inputs()[0].shape
            info["in_channels"] = shape[1] if isinstance(shape[1], int) else None
        info = check_model_record(info, str(path))
        missing = [k for k in REQUIRED_FOR_SCENES if info.get(k) is None]
        if missing:
            flags = {"mean": "--mean", "std": "--std", "in_channels": "--bands"}
            raise ConfigError(f"{path} lacks changekit's metadata ({', '.join(missing)}); give "
                              f"{', '.join(dict.fromkeys(flags[k] for k in missing))} (in training units), or export it "
                              "with `changekit export`")
        self.changekit_info = info
        self.in_channels, self.num_classes = int(info["in_channels"]), int(info.get("num_classes") or 2)
        self.fixed_size = tuple(info["fixed_size"]) if info.get("fixed_size") else None
        self.fixed_batch = info.get("fixed_batch")

    def fingerprint(self) -> str:
        return hashlib.sha1(self.path.read_bytes()).hexdigest()

    def eval(self) -> OnnxModel:
        return self

    def to(self, *_: Any, **__: Any) -> OnnxModel:
        return self

    def __call__(self, *images: torch.Tensor) -> torch.Tensor:
        if len(images) != len(self.input_names):
            raise ConfigError(f"{self.path} takes {len(self.input_names)} input(s) ({', '.join(self.input_names)}), "
                              f"not {len(images)}")
        first = images[0]
        if self.fixed_size is not None and tuple(first.shape[-2:]) != self.fixed_size:
            h, w = self.fixed_size
            raise ConfigError(f"{self.path} was exported for {h}x{w} inputs only, not {first.shape[-2]}x{first.shape[-1]}; "
                              f"use --window {h} (or export the model at your window size)")
        arrays = [x.detach().float().cpu().numpy() for x in images]
        if self.fixed_batch == 1:  # a graph traced for one sample: run the samples one by one
            out = np.concatenate([self._run({n: a[i:i + 1] for n, a in zip(self.input_names, arrays)})
                                  for i in range(len(first))])
        else:
            out = self._run(dict(zip(self.input_names, arrays)))
        want = (len(first), self.num_classes, *first.shape[-2:])
        if tuple(out.shape) != want:
            raise ConfigError(f"{self.path}: the graph answered a {tuple(first.shape)} input with {tuple(out.shape)} "
                              f"logits, not {want} (batch, classes, height, width); export it with `changekit export`")
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(first.device)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        try:
            return self.session.run(None, feeds)[0]
        except Exception as e:  # onnxruntime's own error types: the graph does not take what a scene feeds it
            raise ConfigError(f"{self.path}: ONNX Runtime cannot run it on ({', '.join(self.input_names)}) "
                              f"windows: {_first_line(e)}; export it with `changekit export`") from None
