"""Export to OpenVINO (fp32 or int8) behind a check that must pass, written all or nothing.

    >>> manifest = export_edge(model, "line/", vocab, fmt="openvino", precision="int8",
    ...                        calibration="line_photos/")   # raises if the gate fails; no line/ then

Steps, all inside a temporary directory beside ``out`` (renamed to ``out`` only at the end):

1. the fp32 ONNX graphs (:func:`densevlm.export.onnx.export_onnx`, which checks parity with
   PyTorch; a failure stops here);
2. their OpenVINO IR (:mod:`densevlm.export.openvino`);
3. for int8, NNCF quantisation of the encoder (:mod:`densevlm.export.quantize`) calibrated on
   the user's images (:mod:`densevlm.export.calibration`);
4. the check of the final files: parity with PyTorch (fp32, synthetic scenes, the tolerances of
   :mod:`densevlm.export.verify`) or the accuracy gate (int8, :mod:`densevlm.export.gate`).

When the check fails, :class:`DenseVLMError` says why in one line and nothing is left on disk.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from densevlm.errors import DenseVLMError
from densevlm.export.manifest import (
    EMBEDDINGS_FILE,
    ENCODER_FILE,
    MANIFEST_FILE,
    OPENVINO_ENCODER_FILE,
    OPENVINO_REGION_FILE,
    REGION_FILE,
    file_record,
)
from densevlm.fileio import atomic_write_json, check_output
from densevlm.model import DenseModel
from densevlm.version import __version__
from densevlm.vocab import Vocabulary

__all__ = ["FORMATS", "PRECISIONS", "export_edge", "gate_inputs", "check_gate"]

log = logging.getLogger(__name__)

FORMATS = ("onnx", "openvino")
PRECISIONS = ("fp32", "int8")


def _publish(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``; an earlier ``out`` (allowed by --overwrite) is moved aside first."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.replace(old / out.name)
        staging.replace(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.replace(out)


def gate_inputs(model: Any, calibration: dict[str, Any], spec: Optional[str] = None) -> tuple[list, list]:
    """Prepared held-back images of an export's calibration record (re-opened from its source).

    Args:
        model: the export runtime (its ``prepare`` and ``input_size`` are used).
        calibration: ``manifest["calibration"]``.
        spec: another location of the same images (default: the recorded source).

    Raises:
        DenseVLMError: the source is gone or no longer holds the held-back images.
    """
    from densevlm.data.images import open_image_source
    from densevlm.export.calibration import prepare_images

    recorded = spec is None
    spec = spec or calibration["source"]
    try:
        source = open_image_source(spec)
    except DenseVLMError:
        if not recorded:
            raise
        raise DenseVLMError(f"{spec}: the calibration images recorded in the export cannot be opened there any "
                            "more; pass --calibration with the images the export was made from") from None
    index = {source.name(i): i for i in range(len(source))}
    names = calibration["heldout_names"]
    missing = [n for n in names if n not in index]
    if missing:
        raise DenseVLMError(f"{spec}: {len(missing)} of the {len(names)} held-back calibration images are gone "
                            f"(first: {missing[0]}); pass --calibration with the images the export was made from")
    inputs, plans, _ = prepare_images(model, source, [index[n] for n in names], model.input_size)
    return inputs, plans


def check_gate(reference: DenseModel, exported: Any, manifest: dict[str, Any], calibration: Optional[str] = None,
               eval_data: Optional[str] = None, min_agreement: Optional[float] = None,
               max_macc_drop: Optional[float] = None) -> dict[str, Any]:
    """Re-run the accuracy gate of an int8 export with the thresholds recorded at export unless given."""
    from densevlm.export.gate import run_gate

    recorded = manifest.get("gate") or {}
    inputs, plans = gate_inputs(exported, manifest["calibration"], calibration)
    return run_gate(reference, exported, inputs, plans, eval_data=eval_data,
                    min_agreement=min_agreement if min_agreement is not None else recorded.get("min_agreement", 0.99),
                    max_macc_drop=max_macc_drop if max_macc_drop is not None else recorded.get("max_macc_drop", 1.0))


def _to_openvino(onnx_dir: Path, final: Path, manifest: dict[str, Any]) -> Any:
    """Convert the ONNX graphs to IR in ``final``; returns the encoder's ``openvino.Model``."""
    from densevlm.export.openvino import convert_onnx_graph, save_ir

    encoder = convert_onnx_graph(onnx_dir / ENCODER_FILE)
    save_ir(encoder, final / OPENVINO_ENCODER_FILE)
    if REGION_FILE in manifest["files"]:
        try:
            convert_onnx_graph(onnx_dir / REGION_FILE, final / OPENVINO_REGION_FILE)
        except DenseVLMError as e:
            log.warning("skipping the region classifier (optional): %s", e)
    return encoder


def export_edge(
    model: DenseModel,
    out: str | Path,
    vocab: Vocabulary,
    fmt: str = "openvino",
    precision: str = "fp32",
    calibration: Optional[str] = None,
    calibration_size: int = 300,
    keep_float: Optional[str] = None,
    eval_data: Optional[str] = None,
    min_agreement: float = 0.99,
    max_macc_drop: float = 1.0,
    size: Optional[int] = None,
    dynamic: bool = False,
    regions: bool = True,
    parity_images: int = 4,
    threads: Optional[int] = None,
    overwrite: bool = False,
    load_args: Optional[dict[str, Any]] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> dict[str, Any]:
    """Export ``model`` as ``fmt`` at ``precision`` into ``out``, only if its check passes.

    Args:
        fmt, precision: ``openvino`` (``fp32`` or ``int8``); ``onnx`` is written by :func:`export_onnx`.
        calibration: image source of the user's own unlabeled images (needed for int8).
        calibration_size: calibration images (fewer when the source has fewer after the held-back part).
        keep_float: int8 only: which operations stay in float, a key of
            :data:`densevlm.export.quantize.FLOAT_SCOPES` (default: its ``DEFAULT_KEEP_FLOAT``).
        eval_data: optional labelled panoptic set for the gate.
        min_agreement, max_macc_drop: gate thresholds (see :mod:`densevlm.export.gate`).
        size, dynamic, regions, parity_images, threads, load_args: as :func:`export_onnx`.
        overwrite: replace a non-empty ``out``.
        progress: called with a short note before each slow step.

    Returns:
        The manifest written to ``out``.

    Raises:
        DenseVLMError: bad arguments, a failed parity check or gate (one line; ``out`` untouched).
    """
    from densevlm.export.onnx import export_onnx
    from densevlm.export.openvino import load_openvino_model, require_openvino, save_ir

    if fmt != "openvino" or precision not in PRECISIONS:
        raise DenseVLMError(f"--format {fmt} --precision {precision}: this writer makes openvino fp32 or int8 exports")
    if precision == "int8" and calibration is None:
        raise DenseVLMError("--precision int8 needs --calibration IMAGES: your own unlabeled images (a folder, glob, "
                            "COCO JSON or tar shards), never random data")
    if keep_float is not None and precision != "int8":
        raise DenseVLMError(f"--keep-float {keep_float}: only an int8 export keeps some layers in float")
    require_openvino("nncf") if precision == "int8" else require_openvino()
    if keep_float is not None:
        from densevlm.export.quantize import check_keep_float

        check_keep_float(keep_float)
    import openvino

    note = progress or (lambda message: None)
    out = check_output(out, "dir", overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        onnx_dir, final = staging / "onnx", staging / "final"
        final.mkdir()
        manifest = export_onnx(model, onnx_dir, vocab, size=size, dynamic=dynamic, regions=regions,
                               parity=True, parity_images=parity_images, threads=threads, load_args=load_args,
                               progress=note)
        if not manifest["parity"]["passed"]:
            raise DenseVLMError("the fp32 ONNX graph failed its parity check with PyTorch ("
                                + "; ".join(manifest["parity"]["failures"]) + "); nothing written")
        note("converting to OpenVINO IR")
        encoder = _to_openvino(onnx_dir, final, manifest)
        shutil.copy2(onnx_dir / EMBEDDINGS_FILE, final / EMBEDDINGS_FILE)
        record: dict[str, Any] = {"format": "openvino", "precision": precision, "openvino": openvino.__version__,
                                  "encoder_file": OPENVINO_ENCODER_FILE, "region_file": OPENVINO_REGION_FILE}
        split = None
        if precision == "int8":
            split, quantized = _quantize(model, encoder, calibration, calibration_size, keep_float, manifest, note)
            save_ir(quantized["model"], final / OPENVINO_ENCODER_FILE)
            manifest["calibration"] = quantized["record"]
            import nncf

            record["nncf"] = nncf.__version__
        manifest["export"].update(record)
        manifest["parity"] = None
        manifest["densevlm_version"] = __version__
        manifest["files"] = {p.name: file_record(p) for p in sorted(final.iterdir())}
        atomic_write_json(final / MANIFEST_FILE, manifest)
        exported = load_openvino_model(final, threads=threads, verify=False)
        what = f"the {precision} OpenVINO export of {model.spec.arch}"
        if precision == "fp32":
            from densevlm.export.verify import check_scenes

            note(f"checking parity of the OpenVINO graphs on {parity_images} synthetic scenes")
            manifest["parity"] = check_scenes(model, exported, count=parity_images, vocab=vocab)
            if not manifest["parity"]["passed"]:
                raise DenseVLMError(f"{what} failed its parity check with PyTorch: "
                                    + "; ".join(manifest["parity"]["failures"]) + f"; nothing written to {out}")
        else:
            manifest["gate"] = _gate(model, exported, split, eval_data, min_agreement, max_macc_drop, note)
            if not manifest["gate"]["passed"]:
                from densevlm.export.gate import gate_failure

                raise DenseVLMError(gate_failure(manifest["gate"], what) + f"; nothing written to {out}")
        atomic_write_json(final / MANIFEST_FILE, manifest)
        _publish(final, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote %s", out)
    return manifest


def _quantize(model: DenseModel, encoder: Any, calibration: str, calibration_size: int, keep_float: Optional[str],
              manifest: dict[str, Any], note: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    from densevlm.data.images import open_image_source
    from densevlm.export.calibration import prepare_images, split_calibration
    from densevlm.export.quantize import DEFAULT_KEEP_FLOAT, quantize_openvino

    source = open_image_source(calibration)
    split = split_calibration(source, str(calibration), size=calibration_size)
    note(f"calibrating int8 on {len(split.calibrate)} of {split.total} images from {calibration} "
         f"({len(split.heldout)} held back for the accuracy gate)")
    size = int(manifest["export"]["size"])
    inputs, _, skipped = prepare_images(model, source, split.calibrate, size)
    int8, settings = quantize_openvino(encoder, [x[None].numpy() for x in inputs], keep_float or DEFAULT_KEEP_FLOAT)
    record = {**split.to_json(source), "source": _portable(calibration), "count": len(inputs), "skipped": skipped,
              "input_size": size, **settings}
    return split, {"model": int8, "record": record}


def _portable(spec: str) -> str:
    path = Path(spec)
    return str(path.resolve()) if path.exists() else spec


def _gate(model: DenseModel, exported: Any, split: Any, eval_data: Optional[str], min_agreement: float,
          max_macc_drop: float, note: Callable[[str], None]) -> dict[str, Any]:
    from densevlm.data.images import open_image_source
    from densevlm.export.calibration import prepare_images
    from densevlm.export.gate import run_gate

    note(f"accuracy gate: int8 vs PyTorch fp32 on {len(split.heldout)} held-back images"
         + (f" and {eval_data}" if eval_data else ""))
    source = open_image_source(split.source)
    inputs, plans = [], []
    if split.heldout:
        inputs, plans, _ = prepare_images(exported, source, split.heldout, exported.input_size)
    return run_gate(model, exported, inputs, plans, eval_data=eval_data, min_agreement=min_agreement,
                    max_macc_drop=max_macc_drop)
