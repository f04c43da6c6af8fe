"""Interop: ONNX import (models from PyTorch, scikit-learn, any exporter) and export (to ONNX
Runtime), the ONNX backend API, and DLPack feeds. The public face is `graphc.onnx`."""
