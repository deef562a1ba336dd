"""OpenVINO IR graphs of an export, and the runtime that runs them behind :class:`OnnxDenseModel`'s interface.

    >>> convert_onnx_graph("onnx/image_encoder.onnx", "out/image_encoder.xml")   # fp32 IR (.xml + .bin)
    >>> model = load_openvino_model("out/", threads=2)
    >>> dense = model.encode_dense(x[None])          # [1, C, H/p, W/p], as OnnxDenseModel

The IR is converted from the project's ONNX graph (``openvino.convert_model`` reads it
directly), saved without fp16 weight compression, and compiled for the CPU with the float32
precision hint: on CPUs with AMX, OpenVINO would otherwise run float layers in bf16, which is a
different model from the one the parity check or the int8 gate passed.

Needs the ``edge`` extra (``pip install densevlm[edge]``: openvino, nncf).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np

from densevlm.errors import DenseVLMError
from densevlm.export.manifest import (
    MANIFEST_FILE,
    export_root,
    encoder_file,
    read_manifest,
    region_file,
    verify_files,
)
from densevlm.export.runtime import OnnxDenseModel, open_runtime

__all__ = [
    "require_openvino",
    "convert_onnx_graph",
    "save_ir",
    "OpenVinoDenseModel",
    "load_openvino_model",
    "load_export",
    "export_format",
]

log = logging.getLogger(__name__)


def require_openvino(*extra: str) -> None:
    """One-line error naming the install command unless ``openvino`` (and ``extra`` modules) import."""
    missing = [n for n in ("openvino", *extra) if importlib.util.find_spec(n) is None]
    if missing:
        raise DenseVLMError(
            f"OpenVINO export and runtime need {', '.join(missing)}; install with: pip install 'densevlm[edge]'"
        )


def save_ir(ov_model: Any, xml_path: str | Path) -> None:
    """Write ``ov_model`` as ``xml_path`` plus its ``.bin`` weights, float32 weights kept as they are."""
    import openvino as ov

    ov.save_model(ov_model, str(xml_path), compress_to_fp16=False)


def convert_onnx_graph(onnx_path: str | Path, xml_path: Optional[str | Path] = None) -> Any:
    """Read an ONNX graph into an ``openvino.Model`` (and save it as IR when ``xml_path`` is given).

    Raises:
        DenseVLMError: OpenVINO cannot convert the graph (one line with its reason).
    """
    import openvino as ov

    try:
        ov_model = ov.convert_model(str(onnx_path))
    except Exception as e:  # OpenVINO's frontends raise their own exception types
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise DenseVLMError(f"{onnx_path}: OpenVINO cannot convert this graph ({reason})") from None
    if xml_path is not None:
        save_ir(ov_model, xml_path)
    return ov_model


def _first_line(e: Exception) -> str:
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(e).__name__


class OpenVinoDenseModel(OnnxDenseModel):
    """An OpenVINO export run on the CPU: the members, shapes and errors of :class:`OnnxDenseModel`.

    Build it with :func:`load_openvino_model` (or :func:`load_export`, which reads the format
    from the manifest).

    Attributes (besides OnnxDenseModel's):
        precision: ``"fp32"`` or ``"int8"`` as exported.
    """

    def _open_graphs(self, threads: Optional[int]) -> None:
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.precision = str(self.manifest["export"].get("precision", "fp32"))
        self._encoder = self._compile(core, self.directory / encoder_file(self.manifest), config)
        region = region_file(self.manifest)
        has_region = region in self.manifest["files"]
        self._region = self._compile(core, self.directory / region, config) if has_region else None

    @staticmethod
    def _compile(core: Any, path: Path, config: dict[str, Any]) -> Any:
        try:
            return core.compile_model(core.read_model(str(path)), "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError with multi-line details
            raise DenseVLMError(f"{path}: OpenVINO cannot load this graph ({_first_line(e)}); re-export") from None

    def _infer(self, compiled: Any, feeds: Any, what: Path) -> np.ndarray:
        try:
            return np.array(compiled(feeds)[0], copy=True)  # the request's buffer is reused on the next call
        except Exception as e:  # OpenVINO's RuntimeError: an input the graph cannot take
            raise DenseVLMError(f"{what}: OpenVINO failed on this input ({_first_line(e)})") from None

    def _run_encoder(self, array: np.ndarray) -> np.ndarray:
        return self._infer(self._encoder, [array], self.directory / encoder_file(self.manifest))

    def _run_region(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._infer(self._region, feeds, self.directory / region_file(self.manifest))

    def __repr__(self) -> str:
        kind = "dynamic" if self.dynamic else f"{self.input_size}x{self.input_size}"
        return (f"OpenVinoDenseModel({self.directory}, {self.spec.arch}, {self.precision}, {kind}, "
                f"{len(self.vocabulary)} classes)")


def load_openvino_model(
    path_or_dir: str | Path, threads: Optional[int] = None, verify: bool = True, tensors: Optional[str] = None
) -> OpenVinoDenseModel:
    """Open an OpenVINO export made by ``densevlm export --format openvino``.

    Args:
        path_or_dir: the export directory, or any file inside it.
        threads: OpenVINO inference threads (None: OpenVINO's default, one per core).
        verify: check the size and sha256 of every file against the manifest first.
        tensors: ``"torch"`` or ``"numpy"`` outputs (default: torch where it is installed).

    Raises:
        DenseVLMError: one line naming the missing, changed or unreadable file, or an export of another format.
    """
    require_openvino()
    directory = export_root(path_or_dir)
    manifest = read_manifest(directory)
    if manifest["export"].get("format", "onnx") != "openvino":
        raise DenseVLMError(f"{directory} is an ONNX export, not OpenVINO; open it with load_export()")
    if verify:
        verify_files(directory, manifest)
    model = open_runtime(OpenVinoDenseModel, directory, manifest, threads, tensors)
    log.info("loaded OpenVINO export %s (%s, %s)", directory, model.spec.arch, model.precision)
    return model


def export_format(path_or_dir: str | Path) -> str:
    """``"onnx"`` or ``"openvino"``: the format the export's manifest names (DenseVLMError if unreadable)."""
    return str(read_manifest(export_root(path_or_dir))["export"].get("format", "onnx"))


def load_export(path_or_dir: str | Path, threads: Optional[int] = None, verify: bool = True,
                tensors: Optional[str] = None) -> OnnxDenseModel:
    """Open any export, with the runtime its manifest names (``export.format``: onnx or openvino).

    Args:
        path_or_dir, threads, verify, tensors: as for :func:`load_onnx_model`.

    Raises:
        DenseVLMError: as :func:`load_onnx_model` / :func:`load_openvino_model`, or an unknown format.
    """
    from densevlm.export.runtime import load_onnx_model

    directory = export_root(path_or_dir)
    fmt = export_format(directory)
    if fmt == "openvino":
        return load_openvino_model(directory, threads=threads, verify=verify, tensors=tensors)
    if fmt == "onnx":
        return load_onnx_model(directory, threads=threads, verify=verify, tensors=tensors)
    raise DenseVLMError(f"{directory / MANIFEST_FILE}: unknown export format {fmt!r}; upgrade densevlm or re-export")

