"""Parity between the PyTorch model and its ONNX export, on synthetic factory scenes.

What is compared, for every input size checked (the export size, plus a non-square size for
dynamic exports):

* the dense maps ``[B, C, h, w]``: max abs error, relative L2 error ``|onnx - torch| / |torch|``
  and the smallest per-token cosine;
* per-token labels: the argmax over the vocabulary of ``dense . text``, with PyTorch's map and
  the model's own text embeddings on one side and the ONNX map and the *stored* embeddings on
  the other (so ``--fp16-embeddings`` is part of what is checked);
* with a region classifier, the box scores (logits / logit_scale, i.e. cosines) of the exported
  graph against ``roi_pool`` in PyTorch, and their top-1 class.

Tolerances (:class:`Tolerances`) are for fp32 end to end. Both sides compute the same graph in
a different operation order, so errors are rounding noise: about 1e-6 on unit-norm tokens whose
entries are about ``1/sqrt(C)`` (0.03-0.09). ``1e-4`` leaves room for deep or wide models and
still fails on any real mistake (a wrong position-embedding resize or normalisation is 1e-2 or
more). A label can only flip where PyTorch's top-2 score margin is below twice the score error,
so ``label_agreement >= 99.9 %`` tolerates rare exact ties; ``flip_margin_max`` reports the
largest margin among flipped tokens so a real disagreement is visible.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from densevlm.backbones.weights import state_sha256
from densevlm.errors import DenseVLMError
from densevlm.export.openvino import load_export
from densevlm.export.runtime import OnnxDenseModel
from densevlm.imaging import Letterbox
from densevlm.model import DenseModel
from densevlm.regions import similarity
from densevlm.regions.pooling import roi_pool
from densevlm.vocab import Vocabulary

__all__ = [
    "Tolerances",
    "TOLERANCES",
    "check_parity",
    "check_export",
    "check_scenes",
    "reference_vocabulary",
    "check_same_tower",
    "parity_inputs",
    "format_parity",
    "image_tower_fingerprint",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tolerances:
    """Pass thresholds of :func:`check_parity` (fp32; see the module docstring for why).

    Attributes:
        max_abs: largest absolute difference of any dense-map entry (unit-norm tokens).
        rel_l2: ``|onnx - torch|_2 / |torch|_2`` over all dense maps.
        cos_min: smallest cosine between a PyTorch token and its ONNX token.
        label_agreement: fraction of tokens whose vocabulary argmax agrees.
        region_max_abs: largest box-score (cosine) difference, *plus* the largest L2 row
            difference of the stored embeddings (zero in fp32, ~1e-3 with fp16 embeddings).
        region_agreement: fraction of boxes whose top-1 class agrees.
    """

    max_abs: float = 1e-4
    rel_l2: float = 1e-4
    cos_min: float = 0.9999
    label_agreement: float = 0.999
    region_max_abs: float = 1e-4
    region_agreement: float = 0.999


TOLERANCES = Tolerances()


def image_tower_fingerprint(model: DenseModel) -> str:
    """Hex sha256 of the image tower's parameters and buffers (names, shapes and bytes)."""
    return state_sha256(model.backbone.clip.visual.state_dict())


def check_same_tower(model: DenseModel, exported: OnnxDenseModel) -> None:
    """Raise unless ``exported`` was made from ``model``'s image-tower weights (when the manifest
    records their fingerprint).

    Raises:
        DenseVLMError: the recorded fingerprint differs from :func:`image_tower_fingerprint`.
    """
    recorded = exported.manifest["model"].get("image_tower_sha256")
    if recorded and recorded != image_tower_fingerprint(model):
        raise DenseVLMError(
            f"{exported.directory} was exported from other image-tower weights than {model.spec.arch} "
            f"({model.spec.source}); pass the model it was made from with --model/--pretrained"
        )


def _edge_boxes(height: int, width: int, patch: int) -> list[list[float]]:
    """Boxes that stress RoI-align conventions: whole input, sub-cell, partly outside, one pixel thin."""
    return [
        [0.0, 0.0, float(width), float(height)],
        [1.3 * patch, 0.7 * patch, 1.55 * patch, 1.03 * patch],
        [-float(patch), height / 2.0, width / 3.0, height + float(patch)],
        [width / 2.0, 0.0, width / 2.0 + 0.5, float(height)],
    ]


def _scene_boxes(scene: Any, plan: Letterbox, patch: int, stretch: float = 1.0) -> torch.Tensor:
    """``[N + 4, 4]``: every segment's box in input pixels (widened by ``stretch`` as its image
    was, then :meth:`Letterbox.to_input`), then :func:`_edge_boxes`."""
    boxes = [[x * stretch, y, (x + w) * stretch, y + h] for x, y, w, h in (seg.bbox for seg in scene.segments)]
    rows = plan.to_input(torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)).tolist()
    rows += _edge_boxes(plan.input_height, plan.input_width, patch)
    return torch.tensor(rows, dtype=torch.float32)


def parity_inputs(
    onnx_model: OnnxDenseModel, count: int = 4, seed: int = 0, size: Optional[int] = None
) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """Synthetic factory scenes prepared for ``onnx_model``, with boxes to classify.

    Args:
        count: scenes per group (the second group uses the first ``max(1, count // 2)``).
        seed: world seed of :func:`densevlm.data.synth.generate_scene`.
        size: longest input side (default: the export size).

    Returns:
        ``(groups, boxes)``: ``groups`` holds ``[B, 3, H, W]`` batches, one per input size (the
        export size, square; for dynamic exports also a 2:3 landscape size, e.g. 64x96 for 64);
        ``boxes[g][i]`` is ``[N, 4]`` XYXY input pixels: every scene segment's box plus
        four boxes at awkward places (whole input, sub-cell, partly outside, half a pixel wide).
    """
    from densevlm.data.synth import generate_scene

    if count < 1:
        raise DenseVLMError(f"parity needs at least one image, got count={count}")
    size = size or onnx_model.input_size
    patch = onnx_model.patch_size
    scenes = [generate_scene(seed, i, size) for i in range(count)]
    # per group: its scenes, their images, prepare's size and square, how much the images were widened
    plans = [(scenes, [Image.fromarray(s.image) for s in scenes], size, True, 1.0)]
    if onnx_model.dynamic:
        wide, some = int(math.ceil(1.5 * size / patch)) * patch, scenes[: max(1, count // 2)]
        images = [Image.fromarray(s.image).resize((wide, size), Image.BICUBIC) for s in some]
        plans.append((some, images, wide, False, wide / size))
    groups: list[torch.Tensor] = []
    boxes: list[list[torch.Tensor]] = []
    for chosen, images, side, square, stretch in plans:
        prepared = [onnx_model.prepare(image, size=side, square=square) for image in images]
        groups.append(torch.stack([x for x, _ in prepared]))
        boxes.append([_scene_boxes(s, plan, patch, stretch) for s, (_, plan) in zip(chosen, prepared)])
    return groups, boxes


def _labels_and_margin(dense: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token argmax ``[B, h, w]`` and top-1 minus top-2 score ``[B, h, w]``."""
    scores = similarity.cosine(dense, text, dim=1)
    if scores.shape[1] == 1:
        return scores.argmax(dim=1), torch.full(scores.shape[:1] + scores.shape[2:], float("inf"))
    top = scores.topk(2, dim=1).values
    return scores.argmax(dim=1), top[:, 0] - top[:, 1]


def check_parity(
    model: DenseModel,
    onnx_model: OnnxDenseModel,
    images: torch.Tensor | Sequence[torch.Tensor],
    boxes: Optional[Sequence[Sequence[torch.Tensor]]] = None,
    vocab: Optional[Vocabulary] = None,
    tolerances: Tolerances = TOLERANCES,
) -> dict[str, Any]:
    """Compare PyTorch and ONNX Runtime dense maps, labels and (optionally) box scores.

    Args:
        model: the PyTorch model the export was made from.
        onnx_model: the loaded export.
        images: one ``[B, 3, H, W]`` normalised batch, or several (one per input size).
        boxes: per batch, per image ``[N, 4]`` XYXY input-pixel boxes; used only when the export
            has a region classifier.
        vocab: vocabulary for the labels (default: :func:`reference_vocabulary`, the exported one).
            The PyTorch side's class embeddings are ``model.embed_vocabulary(vocab)``.
        tolerances: pass thresholds.

    Returns:
        A JSON-ready dict: ``passed``, ``failures`` (one line each), the overall ``max_abs``,
        ``rel_l2``, ``cos_min``, ``label_agreement``, ``label_flips``, ``flip_margin_max``,
        ``embeddings_max_abs``, per-size rows under ``sizes``, ``regions`` (or None),
        ``tolerances`` and wall-clock ``seconds`` per runtime (informative only).
    """
    groups = [images] if isinstance(images, torch.Tensor) else list(images)
    if not groups:
        raise DenseVLMError("parity needs at least one image batch")
    if boxes is not None and len(boxes) != len(groups):
        raise DenseVLMError(f"got boxes for {len(boxes)} batches but {len(groups)} batches of images")
    vocab = vocab or reference_vocabulary(onnx_model, model)
    with torch.inference_mode():
        text_ref = model.embed_vocabulary(vocab, templates=onnx_model.spec.templates).float().cpu()
    text_onnx = onnx_model.embed_vocabulary(vocab)
    seconds = {"torch": 0.0, "onnx": 0.0}
    rows: list[dict[str, Any]] = []
    region_rows: list[tuple[torch.Tensor, torch.Tensor]] = []
    errors: list[str] = []
    for g, x in enumerate(groups):
        size = f"{x.shape[-2]}x{x.shape[-1]}"
        start = time.perf_counter()
        with torch.inference_mode():
            ref = model.encode_dense(x.to(model.device)).float().cpu()
        seconds["torch"] += time.perf_counter() - start
        start = time.perf_counter()
        try:
            out = onnx_model.encode_dense(x)
        except DenseVLMError as e:
            errors.append(f"{size}: {e}")
            continue
        seconds["onnx"] += time.perf_counter() - start
        if out.shape != ref.shape:
            errors.append(f"{size}: ONNX dense map has shape {tuple(out.shape)}, PyTorch {tuple(ref.shape)}")
            continue
        rows.append(_compare_dense(size, ref, out, text_ref, text_onnx))
        if boxes is not None and onnx_model.has_region_classifier:
            with torch.inference_mode():
                scores_ref = similarity.cosine(roi_pool(ref, list(boxes[g]), model.patch_size), text_ref)
            scores_out = onnx_model.classify_boxes(out, list(boxes[g])) / onnx_model.logit_scale
            region_rows.append((scores_ref, scores_out))
    emb_row_err = float((text_onnx - text_ref).norm(dim=1).max())
    result = _summarise(rows)
    result.update({
        "embeddings_max_abs": float((text_onnx - text_ref).abs().max()),
        "regions": _region_summary(region_rows, emb_row_err, tolerances) if region_rows else None,
        "tolerances": asdict(tolerances),
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
    })
    result["failures"] = [f"ONNX Runtime could not run {e}" for e in errors] + _failures(result, tolerances)
    result["passed"] = not result["failures"]
    if result["passed"]:
        log.info("parity passed: max abs %.2e, labels %.4f", result["max_abs"], result["label_agreement"])
    else:
        log.warning("parity FAILED: %s", "; ".join(result["failures"]))
    return result


def _compare_dense(size: str, ref: torch.Tensor, out: torch.Tensor, text_ref: torch.Tensor,
                   text_onnx: torch.Tensor) -> dict[str, Any]:
    """One size's row; keys starting with ``_`` are sums for :func:`_summarise`."""
    diff = out - ref
    cos = (out * ref).sum(dim=1) / (out.norm(dim=1) * ref.norm(dim=1)).clamp_min(1e-12)
    labels_ref, margin = _labels_and_margin(ref, text_ref)
    labels_out, _ = _labels_and_margin(out, text_onnx)
    flipped = labels_ref != labels_out
    n_flips = int(flipped.sum())
    return {
        "size": size,
        "images": int(ref.shape[0]),
        "tokens": labels_ref.numel(),
        "max_abs": float(diff.abs().max()),
        "rel_l2": float(diff.norm() / ref.norm().clamp_min(1e-12)),
        "cos_min": float(cos.min()),
        "label_agreement": 1.0 - n_flips / labels_ref.numel(),
        "_flips": n_flips,
        "_flip_margin_max": float(margin[flipped].max()) if n_flips else 0.0,
        "_sq_err": float(diff.pow(2).sum()),
        "_sq_ref": float(ref.pow(2).sum()),
    }


def _summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Overall dense metrics over every compared size (None where nothing was compared)."""
    tokens = sum(r["tokens"] for r in rows)
    flips = sum(r["_flips"] for r in rows)
    sq_ref = sum(r["_sq_ref"] for r in rows)
    return {
        "images": sum(r["images"] for r in rows),
        "tokens": tokens,
        "max_abs": max((r["max_abs"] for r in rows), default=None),
        "rel_l2": math.sqrt(sum(r["_sq_err"] for r in rows) / sq_ref) if sq_ref > 0 else None,
        "cos_min": min((r["cos_min"] for r in rows), default=None),
        "label_agreement": 1.0 - flips / tokens if tokens else None,
        "label_flips": flips,
        "flip_margin_max": max((r["_flip_margin_max"] for r in rows), default=0.0),
        "sizes": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
    }


def check_export(
    model: DenseModel,
    directory: str | Path,
    count: int = 4,
    seed: int = 0,
    threads: Optional[int] = None,
    tolerances: Tolerances = TOLERANCES,
) -> dict[str, Any]:
    """Re-run the parity check of an existing export against ``model``.

    Args:
        model: the PyTorch model the export was made from.
        directory: the export directory.
        count, seed: synthetic scenes to check on (see :func:`parity_inputs`).
        threads: ONNX Runtime intra-op threads.

    Raises:
        DenseVLMError: the files changed since export, or ``model``'s image tower is not the one
            that was exported (its weight fingerprint differs).
    """
    onnx_model = load_export(directory, threads=threads)
    check_same_tower(model, onnx_model)
    return check_scenes(model, onnx_model, count=count, seed=seed, tolerances=tolerances)


def reference_vocabulary(exported: OnnxDenseModel, model: DenseModel) -> Vocabulary:
    """The exported vocabulary as the PyTorch reference must score it.

    A plain vocabulary's embeddings come from the text tower, so the reference recomputes them.
    An export of an adapted vocabulary (``densevlm vocab adapt``; the manifest's
    ``vocabulary.adapted`` names the method) stores a fitted table that no text tower can
    recompute: the reference gets that same table (as an
    :class:`~densevlm.vocab.adapted.AdaptedVocabulary` for ``model``), so parity and the
    accuracy gate compare the image paths, which is what the export changed.
    """
    if exported.adapted is None:
        return exported.vocabulary
    from densevlm.vocab.adapted import adapted

    table = np.asarray(exported.embed_vocabulary(exported.vocabulary), np.float32)
    return adapted(exported.vocabulary, table, model.backbone.weights_sha256(), np.zeros(len(table), np.int64), 3.0,
                   source=f"{exported.directory} (stored table)", method=exported.adapted)


def check_scenes(model: DenseModel, exported: OnnxDenseModel, count: int = 4, seed: int = 0,
                 tolerances: Tolerances = TOLERANCES, vocab: Optional[Vocabulary] = None) -> dict[str, Any]:
    """:func:`check_parity` on the synthetic scenes of :func:`parity_inputs` (``count``, ``seed``),
    with ``vocab`` (default: the exported one)."""
    groups, boxes = parity_inputs(exported, count=count, seed=seed)
    return check_parity(model, exported, groups, boxes, vocab=vocab, tolerances=tolerances)


def _region_summary(
    rows: list[tuple[torch.Tensor, torch.Tensor]], emb_row_err: float, tol: Tolerances
) -> dict[str, Any]:
    ref = torch.cat([r for r, _ in rows])
    out = torch.cat([o for _, o in rows])
    n = int(ref.shape[0])
    agree = int((ref.argmax(dim=1) == out.argmax(dim=1)).sum()) if n else 0
    return {
        "boxes": n,
        "score_max_abs": float((out - ref).abs().max()) if n else 0.0,
        "score_tolerance": tol.region_max_abs + emb_row_err,
        "top1_agreement": agree / n if n else 1.0,
    }


def _failures(r: dict[str, Any], tol: Tolerances) -> list[str]:
    if not r["tokens"]:
        return ["no input size could be compared"]
    out = []
    if not r["max_abs"] <= tol.max_abs:
        out.append(f"dense max abs error {r['max_abs']:.2e} > {tol.max_abs:.0e}")
    if not r["rel_l2"] <= tol.rel_l2:
        out.append(f"dense relative L2 error {r['rel_l2']:.2e} > {tol.rel_l2:.0e}")
    if not r["cos_min"] >= tol.cos_min:
        out.append(f"smallest token cosine {r['cos_min']:.6f} < {tol.cos_min}")
    if not r["label_agreement"] >= tol.label_agreement:
        out.append(f"label agreement {r['label_agreement']:.4%} < {tol.label_agreement:.1%} "
                   f"({r['label_flips']} of {r['tokens']} tokens, largest margin {r['flip_margin_max']:.2e})")
    reg = r["regions"]
    if reg is not None:
        if not reg["score_max_abs"] <= reg["score_tolerance"]:
            out.append(f"box score max abs error {reg['score_max_abs']:.2e} > {reg['score_tolerance']:.1e}")
        if not reg["top1_agreement"] >= tol.region_agreement:
            out.append(f"box top-1 agreement {reg['top1_agreement']:.4%} < {tol.region_agreement:.1%}")
    return out


def format_parity(result: dict[str, Any]) -> str:
    """A short text table of a :func:`check_parity` result (for the command line)."""
    tol = result["tolerances"]
    lines = [
        f"parity, PyTorch vs ONNX Runtime ({result['images']} images, {len(result['sizes'])} sizes): "
        + ("PASSED" if result["passed"] else "FAILED"),
        f"  {'size':>9}  {'images':>6}  {'tokens':>6}  {'max abs':>9}  {'rel L2':>9}  {'cos min':>10}  {'labels':>8}",
    ]
    for s in result["sizes"]:
        lines.append(
            f"  {s['size']:>9}  {s['images']:>6}  {s['tokens']:>6}  {s['max_abs']:>9.2e}  {s['rel_l2']:>9.2e}  "
            f"{s['cos_min']:>10.7f}  {s['label_agreement']:>8.2%}"
        )
    lines.append(
        f"  {'limit':>9}  {'':>6}  {'':>6}  {tol['max_abs']:>9.0e}  {tol['rel_l2']:>9.0e}  {tol['cos_min']:>10}  "
        f"{tol['label_agreement']:>8.1%}"
    )
    reg = result.get("regions")
    if reg is not None:
        lines.append(
            f"  boxes: {reg['boxes']}, score max abs {reg['score_max_abs']:.2e} (limit {reg['score_tolerance']:.1e}), "
            f"top-1 agreement {reg['top1_agreement']:.2%}"
        )
    lines.append(f"  text embeddings max abs vs PyTorch: {result['embeddings_max_abs']:.2e}")
    for failure in result["failures"]:
        lines.append(f"  FAILED: {failure}")
    return "\n".join(lines)
