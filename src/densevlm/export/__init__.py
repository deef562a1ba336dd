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

from densevlm.lazy import homes, loader

_HOMES = homes(__name__, {
    "onnx": ("export_onnx",),
    "build": ("export_edge",),
    "openvino": ("load_export", "export_format", "load_openvino_model", "OpenVinoDenseModel"),
    "runtime": ("load_onnx_model", "OnnxDenseModel", "ExportSpec", "require_packages"),
    "engines": ("load_engine", "infer_engine", "ENGINES"),
    "verify": ("check_parity", "check_export", "check_scenes", "check_same_tower", "parity_inputs", "format_parity",
               "reference_vocabulary", "Tolerances", "TOLERANCES", "image_tower_fingerprint"),
    "manifest": ("read_manifest", "ENCODER_FILE", "EMBEDDINGS_FILE", "REGION_FILE", "MANIFEST_FILE"),
})

__all__ = list(_HOMES)
__getattr__ = loader(__name__, _HOMES)
