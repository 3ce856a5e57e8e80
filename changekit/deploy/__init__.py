"""Deployment: ONNX export and ONNX Runtime inference (docs/deploy.md). No Lightning here."""

from changekit.deploy.onnx import ExportError, OnnxModel, export_onnx, read_metadata
from changekit.deploy.optimize import InferenceModel, optimize_for_inference

__all__ = ["ExportError", "InferenceModel", "OnnxModel", "export_onnx", "optimize_for_inference", "read_metadata"]
