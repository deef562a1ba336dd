"""ONNX and OpenVINO export of the image encoder's dense path plus precomputed text embeddings.

    >>> from densevlm.export import export_onnx, export_edge, load_export
    >>> export_onnx(model, "export/", vocab, dynamic=True)     # writes the directory, checks parity
    >>> export_edge(model, "line/", vocab, precision="int8", calibration="photos/")  # OpenVINO, gated
    >>> exported = load_export("line/")                        # runtime chosen from the manifest

Needs the ``export`` extra (``pip install densevlm[export]``: onnx, onnxruntime, onnxscript); OpenVINO
and int8 need the ``edge`` extra (openvino, nncf).
"""

from densevlm.export.manifest import EMBEDDINGS_FILE, ENCODER_FILE, MANIFEST_FILE, REGION_FILE, read_manifest
from densevlm.export.build import export_edge
from densevlm.export.onnx import export_onnx
from densevlm.export.openvino import OpenVinoDenseModel, load_export, load_openvino_model
from densevlm.export.runtime import ExportSpec, OnnxDenseModel, load_onnx_model, require_packages
from densevlm.export.verify import (
    TOLERANCES,
    Tolerances,
    check_export,
    check_parity,
    format_parity,
    image_tower_fingerprint,
    parity_inputs,
)

__all__ = [
    "export_onnx",
    "export_edge",
    "load_export",
    "load_openvino_model",
    "OpenVinoDenseModel",
    "load_onnx_model",
    "OnnxDenseModel",
    "ExportSpec",
    "check_parity",
    "check_export",
    "parity_inputs",
    "format_parity",
    "Tolerances",
    "TOLERANCES",
    "image_tower_fingerprint",
    "read_manifest",
    "require_packages",
    "ENCODER_FILE",
    "EMBEDDINGS_FILE",
    "REGION_FILE",
    "MANIFEST_FILE",
]
