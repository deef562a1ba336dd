"""ONNX and OpenVINO export of the image encoder's dense path plus precomputed text embeddings.

    >>> from densevlm.export import export_onnx, export_edge, load_export
    >>> export_onnx(model, "export/", vocab, dynamic=True)     # writes the directory, checks parity
    >>> export_edge(model, "line/", vocab, precision="int8", calibration="photos/")  # OpenVINO, gated
    >>> exported = load_export("line/")                        # runtime chosen from the manifest

Needs the ``export`` extra (``pip install densevlm[export]``: onnx, onnxruntime, onnxscript); OpenVINO
and int8 need the ``edge`` extra (openvino, nncf). Running an export needs neither PyTorch nor the
exporters (``pip install densevlm[runtime]``): the names below load on first use, so importing
``densevlm.export.openvino`` or ``.runtime`` does not import the export code (and PyTorch).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "export_onnx": "densevlm.export.onnx",
    "export_edge": "densevlm.export.build",
    "load_export": "densevlm.export.openvino",
    "export_format": "densevlm.export.openvino",
    "load_openvino_model": "densevlm.export.openvino",
    "OpenVinoDenseModel": "densevlm.export.openvino",
    "load_onnx_model": "densevlm.export.runtime",
    "OnnxDenseModel": "densevlm.export.runtime",
    "ExportSpec": "densevlm.export.runtime",
    "require_packages": "densevlm.export.runtime",
    "load_engine": "densevlm.export.engines",
    "ENGINES": "densevlm.export.engines",
    "check_parity": "densevlm.export.verify",
    "check_export": "densevlm.export.verify",
    "parity_inputs": "densevlm.export.verify",
    "format_parity": "densevlm.export.verify",
    "Tolerances": "densevlm.export.verify",
    "TOLERANCES": "densevlm.export.verify",
    "image_tower_fingerprint": "densevlm.export.verify",
    "read_manifest": "densevlm.export.manifest",
    "ENCODER_FILE": "densevlm.export.manifest",
    "EMBEDDINGS_FILE": "densevlm.export.manifest",
    "REGION_FILE": "densevlm.export.manifest",
    "MANIFEST_FILE": "densevlm.export.manifest",
}

__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'densevlm.export' has no attribute {name!r}")
