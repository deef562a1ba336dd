"""Export a :class:`DenseModel`'s dense path and a vocabulary's text embeddings to ONNX.

    >>> manifest = export_onnx(model, "export/", vocab, dynamic=True)
    >>> manifest["parity"]["passed"]
    True

Graphs go through the wrappers of :mod:`densevlm.export.wrappers` only. The new exporter
(``torch.onnx.export(..., dynamo=True)``, via ``torch.export``) is tried first; if it fails the
legacy TorchScript exporter is used and the manifest records which one ran and why. Whatever
ran, the parity check (:mod:`densevlm.export.verify`) is what says the graph is right: the legacy
exporter bakes some shapes into the graph, which the check at a second size catches.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from densevlm.errors import DenseVLMError
from densevlm.export.manifest import (
    EMBEDDINGS_FILE,
    ENCODER_FILE,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_FILE,
    REGION_FILE,
    file_record,
)
from densevlm.export.wrappers import DenseEncoder, RegionClassifier
from densevlm.fileio import atomic_write, atomic_write_json
from densevlm.model import DenseModel
from densevlm.version import __version__
from densevlm.vocab import Vocabulary

__all__ = ["export_onnx", "MIN_OPSET"]

log = logging.getLogger(__name__)

MIN_OPSET = 17  # LayerNormalization


def _trace_grid(model: DenseModel) -> tuple[int, int]:
    """A token grid unlike the native one in both directions (and not square), so every shape
    shortcut in the backbones (e.g. 'grid equals native: skip the position resize') is traced
    on its general path."""
    native = model.image_size // model.patch_size
    return native + 1, native + 2


def _ignore_expected_warnings() -> None:
    """Inside ``warnings.catch_warnings()``: hide the exporters' expected notes (tracer notes on
    the backbones' shape checks, deprecations, and the RoIAlign note: ONNX's sampling_ratio 0
    is torchvision's adaptive -1)."""
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*RoIAlign with a non-zero sampling_ratio.*")


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


def _export_graph(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_shapes: dict[str, dict[int, Any]],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
) -> dict[str, Any]:
    """Write ``module`` to ``path``; ``{"exporter": used, "fallback_reason": why the new exporter
    was not (or None), "seconds": wall-clock time}``.

    Raises:
        DenseVLMError: both exporters failed (one line with both reasons).
    """
    module.eval()
    start = time.perf_counter()
    with warnings.catch_warnings():
        _ignore_expected_warnings()
        try:
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=dynamic_shapes,
                opset_version=opset,
                verbose=False,
                optimize=True,
            )
            program.save(str(path))
            return {"exporter": "dynamo", "fallback_reason": None, "seconds": round(time.perf_counter() - start, 2)}
        except Exception as e:  # any failure of the new exporter: fall back, say why
            reason = _first_line(e)
            log.warning("the torch.export-based ONNX exporter failed (%s); trying the legacy exporter", reason)
        for leftover in path.parent.glob(path.name + "*"):
            leftover.unlink()
        try:
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
            )
        except Exception as e:  # both failed: report both causes on one line
            raise DenseVLMError(
                f"could not export to ONNX: new exporter: {reason}; legacy exporter: {_first_line(e)}"
            ) from None
    return {"exporter": "legacy", "fallback_reason": reason, "seconds": round(time.perf_counter() - start, 2)}


def _dims() -> tuple[Any, Any, Any]:
    """torch.export's dynamic batch, rows and cols (token grid) dimensions."""
    return (torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("rows", min=1, max=1024),
            torch.export.Dim("cols", min=1, max=1024))


def _export_encoder(model: DenseModel, path: Path, size: int, dynamic: bool, opset: int) -> dict[str, Any]:
    p = model.patch_size
    batch, rows_dim, cols_dim = _dims()
    if dynamic:
        rows, cols = _trace_grid(model)
        example = torch.randn(2, 3, rows * p, cols * p, device=model.device)
        shapes = {"images": {0: batch, 2: p * rows_dim, 3: p * cols_dim}}
        axes = {"images": {0: "batch", 2: "height", 3: "width"}, "dense": {0: "batch", 2: "rows", 3: "cols"}}
    else:
        example = torch.randn(2, 3, size, size, device=model.device)
        shapes = {"images": {0: batch}}
        axes = {"images": {0: "batch"}, "dense": {0: "batch"}}
    info = _export_graph(DenseEncoder(model), (example,), path, ["images"], ["dense"], shapes, axes, opset)
    log.info("exported the image encoder with the %s exporter in %.1f s", info["exporter"], info["seconds"])
    return {**info, "trace_size": [int(example.shape[-2]), int(example.shape[-1])]}


def _export_regions(model: DenseModel, text: torch.Tensor, path: Path, opset: int) -> dict[str, Any]:
    rows, cols = _trace_grid(model)
    dense = torch.nn.functional.normalize(torch.randn(2, model.embed_dim, rows, cols), dim=1)
    boxes = torch.tensor([[0, 0, 0, 24, 16], [1, 3, 5, 40, 30], [0, 8, 8, 9, 9]], dtype=torch.float32)
    batch, rows_dim, cols_dim = _dims()
    shapes = {"dense": {0: batch, 2: rows_dim, 3: cols_dim}, "boxes": {0: torch.export.Dim("boxes", min=1, max=1 << 20)}}
    axes = {"dense": {0: "batch", 2: "rows", 3: "cols"}, "boxes": {0: "boxes"}, "logits": {0: "boxes"}}
    module = RegionClassifier(text, model.patch_size, model.logit_scale)
    return _export_graph(module, (dense, boxes), path, ["dense", "boxes"], ["logits"], shapes, axes, opset)


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)

    atomic_write(path, write)


def _move_into(staging: Path, out: Path) -> list[str]:
    """Rename every file of ``staging`` into ``out`` (same file system: atomic per file), and
    remove graph files of an earlier export that this one did not write (e.g. a region graph
    after ``--no-regions``), so the directory holds what the manifest lists."""
    names = []
    for item in sorted(staging.iterdir()):
        item.replace(out / item.name)
        names.append(item.name)
    for stale in [*out.glob(ENCODER_FILE + "*"), *out.glob(REGION_FILE + "*")]:
        if stale.name not in names:
            stale.unlink()
    return names


def _check_arguments(model: DenseModel, size: int, opset: int) -> None:
    p = model.patch_size
    if size <= 0 or size % p:
        lower, upper = size // p * p, (size // p + 1) * p
        use = f"{lower} or {upper}" if lower >= p else f"{p} or more"
        raise DenseVLMError(
            f"--size {size} is not a positive multiple of the patch size {p} of {model.spec.arch}; use {use}"
        )
    if opset < MIN_OPSET:
        raise DenseVLMError(f"--opset {opset} is too old: the graph needs opset {MIN_OPSET} or newer (default 18)")


def export_onnx(
    model: DenseModel,
    out: str | Path,
    vocab: Vocabulary,
    size: Optional[int] = None,
    opset: int = 18,
    dynamic: bool = False,
    fp16_embeddings: bool = False,
    regions: bool = True,
    parity: bool = True,
    parity_images: int = 4,
    threads: Optional[int] = None,
    load_args: Optional[dict[str, Any]] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> dict[str, Any]:
    """Write an export directory (layout: :mod:`densevlm.export.manifest`) and check its parity.

    Args:
        model: the model to export (its image tower's dense path).
        out: export directory (created; files of an earlier export are replaced).
        vocab: classes whose text embeddings are stored, ``[K, C]``.
        size: input side in pixels, a multiple of the patch (default ``model.input_size``); a
            fixed-size export takes exactly ``size x size``; a dynamic one any H, W that are
            multiples of the patch, with ``size`` as the default longest side.
        opset: ONNX opset (17 or newer).
        dynamic: make H and W dynamic axes (the batch axis always is).
        fp16_embeddings: store the text embeddings as float16 (half the file; scores change by
            about 1e-3, which the parity check reports).
        regions: also export ``region_classifier.onnx`` (box logits from the dense map).
        parity: run :func:`densevlm.export.verify.check_parity` on ``parity_images`` scenes.
        threads: ONNX Runtime intra-op threads for the parity check.
        load_args: how to load ``model`` again (``{"model": ..., "pretrained": ...}``), stored so
            ``densevlm export --check`` can rebuild it.
        progress: called with a short note before each slow step (the CLI prints them).

    Returns:
        The manifest written to ``out/densevlm_export.json``, including ``parity`` (None when
        skipped; ``parity["passed"]`` False when a tolerance was exceeded: the files are kept).
    """
    from densevlm.export.runtime import load_onnx_model, require_packages

    require_packages("onnx", "onnxscript", "onnxruntime")
    import onnx

    from densevlm.export.verify import check_scenes, image_tower_fingerprint

    note = progress or (lambda message: None)
    size = int(size or model.input_size)
    _check_arguments(model, size, opset)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DenseVLMError(f"{out}: exists and is not a directory; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    with torch.inference_mode():
        text = model.embed_vocabulary(vocab).float().cpu()
    table = text.numpy().astype(np.float16 if fp16_embeddings else np.float32)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        note(f"exporting the image encoder of {model.spec.arch} ({'dynamic H/W' if dynamic else f'{size}x{size}'})")
        encoder = _export_encoder(model, staging / ENCODER_FILE, size, dynamic, opset)
        region_info: Optional[dict[str, Any]] = None
        if regions:
            note("exporting the region classifier")
            try:
                stored = torch.from_numpy(table.astype(np.float32))
                region_info = _export_regions(model, stored, staging / REGION_FILE, opset)
            except DenseVLMError as e:
                log.warning("skipping %s (optional): %s", REGION_FILE, e)
                for partial in staging.glob(REGION_FILE + "*"):
                    partial.unlink()
        written = _move_into(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _save_npy(out / EMBEDDINGS_FILE, table)
    files = {name: file_record(out / name) for name in [*written, EMBEDDINGS_FILE]}
    graphs: dict[str, Any] = {
        "image_encoder": {
            "inputs": {"images": "float32 [batch, 3, H, W], normalised"},
            "outputs": {"dense": "float32 [batch, C, H/p, W/p], unit norm per token"},
        },
    }
    if region_info is not None:
        graphs["region_classifier"] = {
            "inputs": {"dense": "float32 [batch, C, h, w]",
                       "boxes": "float32 [K, 5]: batch index, x1, y1, x2, y2 in input pixels"},
            "outputs": {"logits": "float32 [K, T]: logit_scale * cosine"},
            "roi_align": "output 1x1, adaptive sampling, aligned=True (half-pixel)",
            **region_info,
        }
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "densevlm_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "arch": model.spec.arch,
            "family": model.spec.family,
            "source": model.spec.source,
            "load": load_args,
            "image_size": model.image_size,
            "patch_size": model.patch_size,
            "embed_dim": model.embed_dim,
            "logit_scale": model.logit_scale,
            "image_tower_sha256": image_tower_fingerprint(model),
        },
        "preprocess": {
            "mean": list(model.spec.mean),
            "std": list(model.spec.std),
            "letterbox": "longest side to size (bicubic), RGB/255 normalised with mean/std, zero padding "
                         "right/bottom to a multiple of the patch" + ("" if dynamic else ", square"),
        },
        "export": {
            **encoder,
            "opset": opset,
            "dynamic": dynamic,
            "size": size,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "graphs": graphs,
        },
        "vocabulary": {
            "names": list(vocab.names),
            "synonyms": [list(s) for s in vocab.synonyms],
            "is_thing": list(vocab.is_thing),
            "fingerprint": vocab.fingerprint(),
            "templates": model.spec.templates,
            "adapted": vocab.adaptation,
        },
        "embeddings": {"file": EMBEDDINGS_FILE, "dtype": str(table.dtype), "shape": list(table.shape)},
        "files": files,
        "parity": None,
    }
    atomic_write_json(out / MANIFEST_FILE, manifest)
    if parity:
        note(f"checking parity on {parity_images} synthetic scenes")
        onnx_model = load_onnx_model(out, threads=threads, verify=False)  # files hashed just above
        manifest["parity"] = check_scenes(model, onnx_model, count=parity_images, vocab=vocab)
        atomic_write_json(out / MANIFEST_FILE, manifest)
    log.info("wrote %s (%d files)", out, len(files) + 1)
    return manifest
