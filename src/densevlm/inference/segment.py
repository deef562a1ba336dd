"""Dense open-vocabulary segmentation of one image: a class per pixel and per region.

    >>> model = densevlm.load_model("tiny-student")
    >>> result = densevlm.segment(model, "part.jpg", vocab)
    >>> result.labels            # [H, W] class index per original pixel (uint8, uint16 when K >= 256)
    >>> result.scores            # [H, W] float32 softmax probability of the winning class
    >>> result.segments[0]       # Segment(category=..., score=..., topk=..., bbox=XYXY, area=..., rle=...)
    >>> result.overlay().save("part.overlay.png")

The pixel maps are made in :mod:`densevlm.inference.maps`, the regions and their segments in
:mod:`densevlm.inference.components`; the result types are in :mod:`densevlm.inference.result`.
Regions smaller than ``min_area`` original pixels get no segment; the default is half a model
token (``0.5 * (patch / scale)^2`` original pixels, where ``scale`` is input pixels per original
pixel), clipped to the image (see :func:`default_min_area`). With ``boxes``, each given box is
classified from its RoI feature (RoI-align on the same dense map) instead, and becomes one
segment whose mask is the box's pixels.

The model is any :class:`~densevlm.dense.DenseRuntime` (a ``DenseModel`` in PyTorch, an ONNX
Runtime or OpenVINO export); what is called on it::

    model.prepare(pil, size, square=True) -> ([3, S, S] tensor or array, Letterbox)
    model.encode_dense(x [B, 3, S, S]) -> [B, C, S/p, S/p], unit norm per token
    model.embed_vocabulary(vocab) -> [K, C] unit norm (a tensor's device is where inputs are sent)
    model.patch_size, model.default_size, model.logit_scale, model.spec.arch
    model.classify_boxes(dense, boxes) with --boxes, where the runtime has a region graph

The model's outputs are converted to numpy once (:func:`densevlm.dense.as_array`); everything
after that (:func:`predict`) is numpy, so an export segments without PyTorch installed.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from PIL import Image

from densevlm.dense import DenseRuntime, as_array
from densevlm.errors import DenseVLMError
from densevlm.imaging import Letterbox, open_image, to_rgb
from densevlm.inference.boxes import check_boxes
from densevlm.inference.components import box_segments, label_grid, region_segments
from densevlm.inference.maps import original_labels, original_scores, pixel_predictions
from densevlm.inference.pipeline import Prepared, run_pipeline
from densevlm.inference.result import Segment, SegmentResult
from densevlm.vocab import Vocabulary, load_vocabulary

__all__ = ["segment", "predict", "default_size", "default_min_area", "model_label"]

def default_size(model: DenseRuntime) -> int:
    """Input side used when none is given: :attr:`DenseRuntime.default_size <densevlm.dense.DenseRuntime.default_size>`."""
    return int(model.default_size)


def model_label(model: DenseRuntime) -> str:
    """Where ``model``'s weights came from (``spec.source``: a built-in name, a checkpoint file,
    an export's source), or its architecture when that is unknown or the weights are random."""
    source = str(getattr(model.spec, "source", "") or "")
    return source if source not in ("", "random") else str(model.spec.arch)


def default_min_area(plan: Letterbox, patch_size: int) -> int:
    """Half of a model token's pixels inside the image: ``ceil(0.5 * min(t, W) * min(t, H))``
    original pixels, where ``t = patch / scale`` is a token's side in original pixels, at least 1.

    For most images this is half a token, ``0.5 * t^2``; an image narrower than a token in one
    direction (20000x20, 640x1) gets the part of a token it holds, so its regions are not all
    specks.
    """
    side = patch_size / plan.scale
    return max(1, math.ceil(0.5 * min(side, plan.original_width) * min(side, plan.original_height)))


def predict(
    dense: np.ndarray,
    text: np.ndarray,
    plan: Letterbox,
    vocab: Vocabulary,
    *,
    logit_scale: float,
    patch_size: int,
    top_k: int = 5,
    min_area: Optional[int] = None,
    box_logits: Optional[np.ndarray] = None,
    boxes: Optional[np.ndarray] = None,
    lazy_scores: bool = False,
) -> tuple[np.ndarray, np.ndarray | Callable[[], np.ndarray], list[Segment], int]:
    """Maps and segments of one image from its dense map (the model-free half of :func:`segment`).

    Args:
        dense: ``[C, h, w]`` dense map (unit norm per token) of the letterboxed input (a numpy
            array; a tensor is converted once).
        text: ``[K, C]`` class embeddings (likewise).
        plan: the letterbox that made the input.
        logit_scale: ``model.logit_scale``.
        patch_size: input pixels per token.
        top_k: candidates per segment.
        min_area: speck threshold in original pixels (default :func:`default_min_area`).
        box_logits, boxes: ``[N, K]`` logits (:func:`~densevlm.inference.pipeline.box_logits`) of ``[N, 4]`` XYXY
            original-pixel boxes; when given, the boxes are the segments instead of the
            connected regions.
        lazy_scores: return the score map as a function that makes it (what
            :class:`~densevlm.inference.result.SegmentResult` takes), so a caller that never reads
            it (``densevlm segment`` writes no score map) skips its bilinear upscale to the
            original size; the segments' mean scores do not need it.

    Returns:
        ``(labels [H, W], scores [H, W] float32 (or the function), segments largest first,
        min_area used)``.
    """
    if len(vocab) >= 1 << 16:
        raise DenseVLMError(f"vocabulary has {len(vocab)} classes; the label map holds at most 65535")
    label_dtype = np.uint8 if len(vocab) < 256 else np.uint16
    dense, text = as_array(dense), as_array(text)
    min_area = default_min_area(plan, patch_size) if min_area is None else int(min_area)
    arg, prob = pixel_predictions(dense, text, logit_scale, plan)
    content = arg.astype(label_dtype)
    labels = original_labels(content, plan)
    scores: np.ndarray | Callable[[], np.ndarray] = functools.partial(original_scores, prob, plan)
    if box_logits is not None and boxes is not None:
        segments = box_segments(box_logits, boxes, vocab, top_k, plan.original_height, plan.original_width)
    else:
        grid = label_grid(plan, patch_size)
        if not grid.from_content:
            scores = scores()
        segments = region_segments(dense, text, logit_scale, grid, grid.base(content, labels),
                                   grid.base(prob, scores), vocab, top_k, min_area)
    if not lazy_scores and callable(scores):
        scores = scores()
    if segments and segments[0].source == "region":
        segments.sort(key=lambda s: (-s.area, s.bbox[1], s.bbox[0]))
    for i, seg in enumerate(segments, start=1):
        seg.id = i
    return labels, scores, segments, min_area


def segment(
    model: DenseRuntime,
    image: Image.Image | str | Path | Sequence[Image.Image | str | Path],
    vocab: Vocabulary | str | Path,
    size: Optional[int] = None,
    top_k: int = 5,
    boxes: Optional[Any] = None,
    min_area: Optional[int] = None,
    model_name: Optional[str] = None,
    *,
    templates: Optional[str] = None,
    batch_size: int = 8,
    workers: Optional[int] = None,
) -> SegmentResult | list[SegmentResult]:
    """Label every pixel and every region of ``image`` with a class of ``vocab``.

    Args:
        model: any :class:`~densevlm.dense.DenseRuntime`: a :class:`~densevlm.model.DenseModel`,
            or an export opened with :func:`densevlm.export.load_export` (see the module docstring).
        image: a PIL image or an image file (read as RGB with its EXIF orientation applied), or
            a list of them: the vocabulary is then embedded once, the model runs ``batch_size``
            images at a time and decoding and post-processing run in ``workers`` threads around
            it (:mod:`densevlm.inference.pipeline`).
        vocab: a :class:`~densevlm.vocab.Vocabulary` or a vocabulary file.
        size: longest input side in pixels; the input is letterboxed to a ``size x size``
            square (default: ``model.default_size``).
        top_k: candidates kept per segment.
        boxes: ``[N, 4]`` XYXY boxes in original pixels to classify instead of regions (one image only).
        min_area: regions under this many original pixels get no segment (default: half a
            model token, see :func:`default_min_area`; 0 keeps every region).
        model_name: name written to the JSON (default :func:`model_label`: the built-in name,
            file or tag the weights came from).
        templates: prompt template set (default the model's own; exports carry theirs).
        batch_size, workers: for a list of images (``workers=0``: no threads).

    Returns:
        A :class:`SegmentResult` at the image's original size; for a list, one per image, in order.

    Raises:
        DenseVLMError: unreadable image, bad vocabulary file, or a box that is inverted or
            outside the image.
    """
    if not isinstance(vocab, Vocabulary):
        vocab = load_vocabulary(vocab)
    if top_k < 1:
        raise DenseVLMError(f"top_k must be at least 1, got {top_k}")
    size = int(size or default_size(model))
    if size <= 0:
        raise DenseVLMError(f"size must be positive, got {size}")
    many = isinstance(image, (list, tuple))
    if many and boxes is not None:
        raise DenseVLMError("boxes apply to one image; call segment() per image to classify boxes")
    images = list(image) if many else [image]
    logit_scale, patch_size, name = float(model.logit_scale), int(model.patch_size), model_name or model_label(model)

    def prepare(index: int, item: Image.Image | str | Path) -> Prepared:
        file = str(item) if isinstance(item, (str, Path)) else None
        pil = open_image(item) if file else to_rgb(item)
        box_array = None if boxes is None else check_boxes(boxes, pil.width, pil.height, where=file or "image")
        x, plan = model.prepare(pil, size, square=True)
        return Prepared(index, x, plan, extra=(pil, file), boxes=box_array)

    def finish(prepared: Prepared, dense: np.ndarray, text: np.ndarray) -> SegmentResult:
        pil, file = prepared.extra
        plan = prepared.plan
        labels, scores, segments, used_min_area = predict(
            dense, text, plan, vocab, logit_scale=logit_scale, patch_size=patch_size, top_k=top_k, min_area=min_area,
            box_logits=prepared.box_logits, boxes=prepared.boxes, lazy_scores=True,
        )
        return SegmentResult(
            labels=labels, score_map=scores, segments=segments, vocab=vocab, width=plan.original_width,
            height=plan.original_height, model=name, input_size=size,
            mode="boxes" if prepared.boxes is not None else "regions", min_area=used_min_area, file=file, image=pil,
        )

    results = list(run_pipeline(model, images, vocab, prepare, finish, batch_size=batch_size,
                                workers=workers if many else 0, templates=templates))
    return results if many else results[0]
