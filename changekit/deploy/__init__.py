"""Deployment: ONNX export and ONNX Runtime inference (docs/deploy.md). No Lightning here."""

from changekit.deploy.onnx import ExportError, OnnxModel, export_onnx, read_metadata

__all__ = ["ExportError", "OnnxModel", "export_onnx", "read_metadata"]
