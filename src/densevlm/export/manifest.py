"""The layout of an export directory and its manifest, ``densevlm_export.json``.

An export directory holds::

    image_encoder.onnx        images [B, 3, H, W] (normalised) -> dense [B, C, H/p, W/p]
    image_encoder.onnx.data   the weights, only when the exporter stored them outside the graph
    text_embeddings.npy       [K, C] class embeddings (float32, or float16 with --fp16-embeddings)
    region_classifier.onnx    optional: (dense, boxes [K, 5]) -> logits [K, T]
    densevlm_export.json      this manifest: model, preprocessing, vocabulary, sha256 of every file,
                              parity results

An OpenVINO export (``export.format == "openvino"``) holds ``image_encoder.xml``/``.bin`` and
``region_classifier.xml``/``.bin`` instead of the ``.onnx`` graphs; ``export.encoder_file`` and
``export.region_file`` name the graphs of any export (absent in older manifests: the ONNX names).

The manifest lists every file with its sha256 and size; :func:`verify_files` refuses a directory
whose files were changed, truncated or removed since the export.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from densevlm.errors import DenseVLMError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "ENCODER_FILE",
    "EMBEDDINGS_FILE",
    "REGION_FILE",
    "OPENVINO_ENCODER_FILE",
    "OPENVINO_REGION_FILE",
    "EXPORT_SUFFIXES",
    "export_root",
    "encoder_file",
    "region_file",
    "sha256_file",
    "file_record",
    "read_manifest",
    "verify_files",
]

FORMAT = "densevlm-onnx-export"
FORMAT_VERSION = 1
MANIFEST_FILE = "densevlm_export.json"
ENCODER_FILE = "image_encoder.onnx"
EMBEDDINGS_FILE = "text_embeddings.npy"
REGION_FILE = "region_classifier.onnx"
OPENVINO_ENCODER_FILE = "image_encoder.xml"
OPENVINO_REGION_FILE = "region_classifier.xml"
EXPORT_SUFFIXES = (".onnx", ".xml", ".bin", ".json", ".npy", ".data")  # the files an export directory holds

_REQUIRED_KEYS = ("format_version", "model", "preprocess", "export", "vocabulary", "embeddings", "files")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk``-byte pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def file_record(path: str | Path) -> dict[str, Any]:
    """``{"sha256": ..., "bytes": ...}`` for one written file."""
    path = Path(path)
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def export_root(path_or_dir: str | Path) -> Path:
    """The export directory ``path_or_dir`` names: itself, or the folder of a file inside it (an
    existing file, or a name with one of :data:`EXPORT_SUFFIXES`)."""
    path = Path(path_or_dir)
    return path.parent if path.is_file() or path.suffix in EXPORT_SUFFIXES else path


def encoder_file(manifest: dict[str, Any]) -> str:
    """File name of the image-encoder graph of an export (``image_encoder.onnx`` or ``.xml``)."""
    return str(manifest["export"].get("encoder_file", ENCODER_FILE))


def region_file(manifest: dict[str, Any]) -> str:
    """File name of the region-classifier graph of an export (it may be absent from ``files``)."""
    return str(manifest["export"].get("region_file", REGION_FILE))


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Read and sanity-check ``directory/densevlm_export.json``.

    Raises:
        DenseVLMError: the directory or manifest is missing, not JSON, not an export manifest, or
            written by a newer densevlm.
    """
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if directory.is_file():
        raise DenseVLMError(
            f"{directory}: is a file; expected an export directory (the --out DIR of `densevlm export`, "
            f"holding {MANIFEST_FILE})"
        )
    if not directory.is_dir():
        raise DenseVLMError(
            f"{directory}: export directory not found; create one with `densevlm export --out {directory}`"
        )
    if not path.is_file():
        raise DenseVLMError(
            f"{path}: file missing, so {directory} is not a densevlm export; "
            f"create one with `densevlm export --out {directory}`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DenseVLMError(f"{path}: not a valid export manifest ({str(e).splitlines()[0]}); re-export") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DenseVLMError(f"{path}: not a densevlm export manifest (no \"format\": \"{FORMAT}\"); re-export")
    missing = [k for k in _REQUIRED_KEYS if k not in manifest]
    if missing:
        raise DenseVLMError(f"{path}: manifest lacks {', '.join(missing)}; re-export")
    version = manifest["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DenseVLMError(
            f"{path}: export format version {version} is newer than this densevlm reads ({FORMAT_VERSION}); "
            "upgrade densevlm"
        )
    return manifest


def verify_files(directory: str | Path, manifest: dict[str, Any]) -> None:
    """Check that every file the manifest lists exists with the recorded size and sha256.

    Raises:
        DenseVLMError: one line naming the first missing or changed file.
    """
    directory = Path(directory)
    files = manifest["files"]
    for name in (encoder_file(manifest), EMBEDDINGS_FILE):
        if name not in files:
            raise DenseVLMError(f"{directory / MANIFEST_FILE}: manifest does not list {name}; re-export")
    for name, record in files.items():
        path = directory / name
        if not path.is_file():
            raise DenseVLMError(
                f"{path}: file missing (listed in {MANIFEST_FILE}); re-export or copy the whole directory"
            )
        size = path.stat().st_size
        if size != record.get("bytes"):
            raise DenseVLMError(
                f"{path}: size {size} bytes differs from the {record.get('bytes')} recorded at export "
                "(truncated or replaced); re-export or copy the whole directory"
            )
        digest = sha256_file(path)
        if digest != record.get("sha256"):
            raise DenseVLMError(
                f"{path}: sha256 mismatch (file changed since export: recorded {str(record.get('sha256'))[:12]}..., "
                f"found {digest[:12]}...); re-export or copy the whole directory"
            )
