"""ONNX export of the image encoder's dense path plus precomputed text embeddings.

    >>> from densevlm.export import export_onnx, load_onnx_model
    >>> export_onnx(model, "export/", vocab, dynamic=True)     # writes the directory, checks parity
    >>> onnx_model = load_onnx_model("export/")                # ONNX Runtime on CPU, DenseModel-like

Needs the ``export`` extra (``pip install densevlm[export]``: onnx, onnxruntime, onnxscript).
"""

from densevlm.export.manifest import EMBEDDINGS_FILE, ENCODER_FILE, MANIFEST_FILE, REGION_FILE, read_manifest
from densevlm.export.onnx import export_onnx
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
