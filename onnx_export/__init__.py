"""torch -> ONNX export of trained LANDER models (needs the ``train`` extra)."""

from .export import export_onnx

__all__ = ["export_onnx"]
