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

The model is any :class:`densevlm.dense.DenseRuntime` (PyTorch or an export); nothing outside
that protocol is called on it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image

from densevlm.dense import DenseRuntime
from densevlm.errors import DenseVLMError
from densevlm.imaging import Letterbox, open_image, to_rgb
from densevlm.inference.boxes import check_boxes
from densevlm.inference.components import LabelGrid, box_segments, region_segments
from densevlm.inference.maps import original_maps, pixel_predictions
from densevlm.inference.result import Segment, SegmentResult
from densevlm.regions.pooling import roi_pool
from densevlm.vocab import Vocabulary, load_vocabulary

__all__ = ["segment", "predict", "default_size", "default_min_area"]

def default_size(model: DenseRuntime) -> int:
    """Input side used when none is given: :attr:`DenseRuntime.default_size <densevlm.dense.DenseRuntime.default_size>`."""
    return int(model.default_size)


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
    dense: torch.Tensor,
    text: torch.Tensor,
    plan: Letterbox,
    vocab: Vocabulary,
    *,
    logit_scale: float,
    patch_size: int,
    top_k: int = 5,
    min_area: Optional[int] = None,
    box_features: Optional[torch.Tensor] = None,
    boxes: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray, list[Segment], int]:
    """Maps and segments of one image from its dense map (the model-free half of :func:`segment`).

    Args:
        dense: ``[C, h, w]`` dense map (unit norm per token) of the letterboxed input.
        text: ``[K, C]`` class embeddings on the same device.
        plan: the letterbox that made the input.
        logit_scale: ``model.logit_scale``.
        patch_size: input pixels per token.
        top_k: candidates per segment.
        min_area: speck threshold in original pixels (default :func:`default_min_area`).
        box_features, boxes: ``[N, C]`` RoI features of ``[N, 4]`` XYXY original-pixel boxes;
            when given, the boxes are the segments instead of the connected regions.

    Returns:
        ``(labels [H, W], scores [H, W] float32, segments largest first, min_area used)``.
    """
    if len(vocab) >= 1 << 16:
        raise DenseVLMError(f"vocabulary has {len(vocab)} classes; the label map holds at most 65535")
    label_dtype = np.uint8 if len(vocab) < 256 else np.uint16
    dense = dense.float()
    text = text.float().to(dense.device)
    min_area = default_min_area(plan, patch_size) if min_area is None else int(min_area)
    arg, prob = pixel_predictions(dense, text, logit_scale, plan)
    content = arg.cpu().numpy().astype(label_dtype)
    labels, scores = original_maps(content, prob, plan)
    if box_features is not None and boxes is not None:
        segments = box_segments(box_features.float().to(dense.device), boxes, text, logit_scale, vocab, top_k,
                                 plan.original_height, plan.original_width)
    else:
        grid = LabelGrid.build(content, labels, plan, patch_size)
        segments = region_segments(dense, text, logit_scale, grid, scores, vocab, top_k, min_area)
    if segments and segments[0].source == "region":
        segments.sort(key=lambda s: (-s.area, s.bbox[1], s.bbox[0]))
    for i, seg in enumerate(segments, start=1):
        seg.id = i
    return labels, scores, segments, min_area


def segment(
    model: DenseRuntime,
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
        model: a :class:`~densevlm.dense.DenseRuntime` (a DenseModel or an export).
        image: a PIL image or an image file (read as RGB with its EXIF orientation applied).
        vocab: a :class:`~densevlm.vocab.Vocabulary` or a vocabulary file.
        size: longest input side in pixels; the input is letterboxed to a ``size x size``
            square (default: ``model.default_size``).
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
    with torch.inference_mode():
        text = model.embed_vocabulary(vocab)
        x = x[None].to(text.device)
        dense = model.encode_dense(x)[0]
        box_features = None
        if box_array is not None:
            scaled = torch.as_tensor(plan.to_input(box_array), dtype=torch.float32, device=text.device)
            box_features = roi_pool(dense[None], [scaled], int(model.patch_size))
        labels, scores, segments, used_min_area = predict(
            dense, text, plan, vocab, logit_scale=float(model.logit_scale), patch_size=int(model.patch_size),
            top_k=top_k, min_area=min_area, box_features=box_features, boxes=box_array,
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
