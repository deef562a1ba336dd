"""One model argument, three engines: PyTorch for model names and checkpoints, ONNX Runtime or
OpenVINO for the directories ``densevlm export`` writes.

    >>> runtime, name = load_engine("line/")                    # engine read from the manifest
    >>> runtime, name = load_engine("tiny-student", "torch", threads=2)
    >>> densevlm.segment(runtime, "part.jpg", vocab)           # any of them

An export is recognised by its manifest (``densevlm_export.json`` in the directory, or next to
the file given); its ``export.format`` picks the engine when none is asked for. The ONNX Runtime
and OpenVINO engines return numpy arrays (``tensors="numpy"``) and never import PyTorch, so a
``pip install densevlm[runtime]`` machine runs them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from densevlm.errors import DenseVLMError
from densevlm.export.manifest import EXPORT_SUFFIXES, MANIFEST_FILE

__all__ = ["ENGINES", "export_directory", "infer_engine", "load_engine"]

log = logging.getLogger(__name__)

ENGINES = ("torch", "onnx", "openvino")


def export_directory(model: str | Path) -> Optional[Path]:
    """The export directory ``model`` names (the directory, or a file inside it), else None."""
    path = Path(model)
    if path.is_dir():
        return path if (path / MANIFEST_FILE).is_file() else None
    if path.suffix in EXPORT_SUFFIXES and (path.parent / MANIFEST_FILE).is_file():
        return path.parent
    return None


def infer_engine(model: str | Path, engine: Optional[str] = None) -> str:
    """The engine for ``model``: ``engine`` checked against what ``model`` is, or inferred.

    Raises:
        DenseVLMError: an unknown engine, an export asked to run in another engine than its
            format's, a model name or checkpoint asked to run in ONNX Runtime or OpenVINO, or a
            directory without a manifest.
    """
    if engine is not None and engine not in ENGINES:
        raise DenseVLMError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    directory = export_directory(model)
    if directory is None:
        if Path(model).is_dir():
            raise DenseVLMError(f"{model}: a folder without {MANIFEST_FILE}; give an export directory (written by "
                                "`densevlm export`), a checkpoint file or a model name")
        if engine in ("onnx", "openvino"):
            raise DenseVLMError(f"--engine {engine} runs an export: give its directory (`densevlm export --format "
                                f"{engine} --out DIR`), not {model}")
        return "torch"
    from densevlm.export.openvino import export_format

    fmt = export_format(directory)
    if engine is None:
        return fmt
    if engine == "torch":
        raise DenseVLMError(f"{directory} is an {fmt} export; run it with --engine {fmt} (or leave --engine out)")
    if engine != fmt:
        raise DenseVLMError(f"{directory} is an {fmt} export, not {engine}; run it with --engine {fmt} or export "
                            f"again with --format {engine}")
    return fmt


def load_engine(model: str | Path, engine: Optional[str] = None, threads: Optional[int] = None,
                pretrained: Optional[str] = None, device: Optional[str] = None) -> tuple[Any, str]:
    """``(runtime, engine)`` for a model name, checkpoint or export directory.

    Args:
        model: ``tiny-student``, a checkpoint, an open_clip name, or an export directory (or a
            file inside one).
        engine: ``torch``, ``onnx``, ``openvino``, or None to infer it (:func:`infer_engine`).
        threads: CPU threads of the engine (PyTorch: ``torch.set_num_threads``; None: its default).
        pretrained: open_clip weights (torch only).
        device: torch device (torch only; exports run on the CPU).

    Returns:
        A :class:`~densevlm.dense.DenseRuntime` (exports with numpy outputs) and the engine used.

    Raises:
        DenseVLMError: as :func:`infer_engine`, ``--pretrained``/``--device`` given for an
            export, or a missing runtime package.
    """
    chosen = infer_engine(model, engine)
    if chosen != "torch":
        if pretrained is not None:
            raise DenseVLMError(f"--pretrained applies to --engine torch only; {model} is an {chosen} export")
        if device not in (None, "cpu"):
            raise DenseVLMError(f"the {chosen} engine runs on the CPU; --device {device} applies to --engine torch only")
        from densevlm.export.openvino import load_export

        runtime = load_export(model, threads=threads, tensors="numpy")
        log.info("running %s with %s", runtime.directory, chosen)
        return runtime, chosen
    import torch

    from densevlm.model import load_model

    if threads:
        torch.set_num_threads(int(threads))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_model(model, pretrained=pretrained, device=device), chosen
