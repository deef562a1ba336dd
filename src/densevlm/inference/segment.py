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
pixel). With ``boxes``, each given box is classified from its RoI feature (RoI-align on the same
dense map) instead, and becomes one segment whose mask is the box's pixels.

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

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image

from densevlm.dense import as_array, no_grad, stack_inputs
from densevlm.errors import DenseVLMError
from densevlm.imaging import Letterbox, open_image, to_rgb
from densevlm.inference.boxes import check_boxes
from densevlm.inference.components import LabelGrid, box_segments, region_segments
from densevlm.inference.maps import original_maps, pixel_predictions
from densevlm.inference.result import Segment, SegmentResult
from densevlm.regions import similarity
from densevlm.vocab import Vocabulary, load_vocabulary

__all__ = ["segment", "predict", "box_logits", "default_size", "default_min_area"]

# Default open_clip input side; tiny models use their own native size.
_OPEN_CLIP_SIZE = 448


def default_size(model: Any) -> int:
    """Input side used when none is given: native for tiny models, the export size for ONNX
    exports, else 448 px."""
    if model.spec.config is not None or getattr(model.spec, "exported", False):
        return int(model.input_size)
    return _OPEN_CLIP_SIZE


def default_min_area(plan: Letterbox, patch_size: int) -> int:
    """Half a model token in original pixels: ``ceil(0.5 * (patch / scale)^2)``, at least 1."""
    side = patch_size / plan.scale
    return max(1, math.ceil(0.5 * side * side))


def box_logits(model: Any, dense: Any, boxes: Sequence[np.ndarray], text: Any) -> list[np.ndarray]:
    """Per image, ``[N_i, K]`` logits (``logit_scale`` x cosine) of its boxes on the computed dense map.

    The exported region graph classifies them where the runtime has one (``classify_boxes``);
    otherwise the RoI features are pooled with :func:`densevlm.regions.pooling.roi_pool`, which
    needs PyTorch.

    Args:
        dense: ``[B, C, h, w]`` from ``model.encode_dense``.
        boxes: B arrays ``[N_i, 4]``, XYXY in input pixels.
        text: ``[K, C]`` class embeddings from ``model.embed_vocabulary``.
    """
    counts = np.cumsum([len(b) for b in boxes])[:-1]
    if getattr(model, "has_region_classifier", False):
        logits = as_array(model.classify_boxes(dense, [np.asarray(b, np.float32) for b in boxes]))
        return np.split(logits, counts)
    import torch

    from densevlm.regions.pooling import roi_pool

    dense_t = torch.as_tensor(dense)
    text_t = torch.as_tensor(text, device=dense_t.device)
    scaled = [torch.as_tensor(np.asarray(b), dtype=torch.float32, device=dense_t.device) for b in boxes]
    feats = roi_pool(dense_t.float(), scaled, int(model.patch_size))
    return np.split(as_array(similarity.logits(feats, text_t.float(), float(model.logit_scale))), counts)


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
) -> tuple[np.ndarray, np.ndarray, list[Segment], int]:
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
        box_logits, boxes: ``[N, K]`` logits (:func:`box_logits`) of ``[N, 4]`` XYXY
            original-pixel boxes; when given, the boxes are the segments instead of the
            connected regions.

    Returns:
        ``(labels [H, W], scores [H, W] float32, segments largest first, min_area used)``.
    """
    if len(vocab) >= 1 << 16:
        raise DenseVLMError(f"vocabulary has {len(vocab)} classes; the label map holds at most 65535")
    label_dtype = np.uint8 if len(vocab) < 256 else np.uint16
    dense, text = as_array(dense), as_array(text)
    min_area = default_min_area(plan, patch_size) if min_area is None else int(min_area)
    arg, prob = pixel_predictions(dense, text, logit_scale, plan)
    content = arg.astype(label_dtype)
    labels, scores = original_maps(content, prob, plan)
    if box_logits is not None and boxes is not None:
        segments = box_segments(box_logits, boxes, vocab, top_k, plan.original_height, plan.original_width)
    else:
        grid = LabelGrid.build(content, labels, plan, patch_size)
        segments = region_segments(dense, text, logit_scale, grid, scores, vocab, top_k, min_area)
    if segments and segments[0].source == "region":
        segments.sort(key=lambda s: (-s.area, s.bbox[1], s.bbox[0]))
    for i, seg in enumerate(segments, start=1):
        seg.id = i
    return labels, scores, segments, min_area


def segment(
    model: Any,
    image: Image.Image | str | Path,
    vocab: Vocabulary | str | Path,
    size: Optional[int] = None,
    top_k: int = 5,
    boxes: Optional[Any] = None,
    min_area: Optional[int] = None,
    model_name: Optional[str] = None,
) -> SegmentResult:
    """Label every pixel and every region of ``image`` with a class of ``vocab``.

    Args:
        model: any :class:`~densevlm.dense.DenseRuntime`: a :class:`~densevlm.model.DenseModel`,
            or an export opened with :func:`densevlm.export.load_export` (see the module docstring).
        image: a PIL image or an image file (read as RGB with its EXIF orientation applied).
        vocab: a :class:`~densevlm.vocab.Vocabulary` or a vocabulary file.
        size: longest input side in pixels; the input is letterboxed to a ``size x size``
            square (default: native for tiny models, 448 otherwise).
        top_k: candidates kept per segment.
        boxes: ``[N, 4]`` XYXY boxes in original pixels to classify instead of regions.
        min_area: regions under this many original pixels get no segment (default: half a
            model token, see :func:`default_min_area`; 0 keeps every region).
        model_name: name written to the JSON (default ``model.spec.arch``).

    Returns:
        A :class:`SegmentResult` at the image's original size.

    Raises:
        DenseVLMError: unreadable image, bad vocabulary file, or a box that is inverted or
            outside the image.
    """
    file = None
    if isinstance(image, (str, Path)):
        file = str(image)
        image = open_image(image)
    else:
        image = to_rgb(image)
    if not isinstance(vocab, Vocabulary):
        vocab = load_vocabulary(vocab)
    if top_k < 1:
        raise DenseVLMError(f"top_k must be at least 1, got {top_k}")
    size = int(size or default_size(model))
    if size <= 0:
        raise DenseVLMError(f"size must be positive, got {size}")
    box_array = None
    if boxes is not None:
        box_array = check_boxes(boxes, image.width, image.height, where=file or "image")
    x, plan = model.prepare(image, size, square=True)
    with no_grad():
        text = model.embed_vocabulary(vocab)
        dense = model.encode_dense(stack_inputs([x], like=text))
        logits = None
        if box_array is not None:
            logits = box_logits(model, dense, [plan.to_input(box_array)], text)[0]
        labels, scores, segments, used_min_area = predict(
            as_array(dense)[0], as_array(text), plan, vocab, logit_scale=float(model.logit_scale),
            patch_size=int(model.patch_size), top_k=top_k, min_area=min_area, box_logits=logits, boxes=box_array,
        )
    return SegmentResult(
        labels=labels,
        scores=scores,
        segments=segments,
        vocab=vocab,
        width=plan.original_width,
        height=plan.original_height,
        model=model_name or str(model.spec.arch),
        input_size=size,
        mode="boxes" if box_array is not None else "regions",
        min_area=used_min_area,
        file=file,
        image=image,
    )
