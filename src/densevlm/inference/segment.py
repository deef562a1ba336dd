"""Dense open-vocabulary segmentation of one image: a class per pixel and per region.

    >>> model = densevlm.load_model("tiny-student")
    >>> result = densevlm.segment(model, "part.jpg", vocab)
    >>> result.labels            # [H, W] class index per original pixel (uint8, uint16 when K >= 256)
    >>> result.scores            # [H, W] float32 softmax probability of the winning class
    >>> result.segments[0]       # Segment(category=..., score=..., topk=..., bbox=XYXY, area=..., rle=...)
    >>> result.overlay().save("part.overlay.png")

How the maps are made: the dense map ``[C, h, w]`` (unit norm per token) is scored against the
class embeddings ``[K, C]``; the ``[K, h, w]`` logits are bilinearly upsampled to the model input
(in chunks of classes, so the ``[K, H, W]`` stack never exists at once) where the argmax and
the softmax probability of the winner (temperature ``model.logit_scale``) are taken. The
letterbox is then undone: the content area is cropped and the label map (nearest) and the score
map (bilinear) are resized to the original image size. The ``K``-channel logits are never
resized to the original size, so a 6000x4000 photo costs a few hundred MB, not ``K`` times that.

Regions are the 8-connected components of each class in the original-size label map (found on
the content-size map when the photo is larger than the input, which is equivalent because
nearest-neighbour upscaling keeps connectivity, and much cheaper). Regions
smaller than ``min_area`` original pixels are specks and get no segment (their pixels keep
their class in the label map); the default is half a model token (``0.5 * (patch / scale)^2``
original pixels, where ``scale`` is input pixels per original pixel). A region's candidates
(``topk``) come from the dense map mean-pooled under the region (token weights = the share of
the region's pixels in each token cell), so they may rank another class above the region's
pixel-wise class. With ``boxes``, each given box is classified from its RoI feature
(RoI-align on the same dense map) instead, and becomes one segment whose mask is the box's pixels.

The model interface used here (a DenseModel, or an ONNX runtime model with the same members)::

    model.prepare(pil, size, square=True) -> ([3, S, S] tensor, Letterbox)
    model.encode_dense(x [B, 3, S, S]) -> [B, C, S/p, S/p], unit norm per token
    model.embed_vocabulary(vocab) -> [K, C] unit norm (its device is where inputs are sent)
    model.patch_size, model.input_size, model.logit_scale, model.spec (.config, .arch)

Nothing else is called on the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from densevlm.errors import DenseVLMError
from densevlm.imaging import Letterbox, open_image, to_rgb
from densevlm.inference.boxes import check_boxes
from densevlm.regions.pooling import roi_pool, weighted_pool
from densevlm.regions.rle import decode_rle, encode_rle
from densevlm.vocab import Vocabulary, load_vocabulary

__all__ = [
    "Segment",
    "SegmentResult",
    "segment",
    "default_size",
    "default_min_area",
    "predict",
    "SCHEMA",
]

SCHEMA = "densevlm.segment/1"

# Size of the logit chunk upsampled at once (classes x input pixels): 16 M floats = 64 MB.
_MAX_CHUNK_ELEMENTS = 1 << 24
# Default open_clip input side; tiny models use their own native size.
_OPEN_CLIP_SIZE = 448
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass
class Segment:
    """One predicted segment.

    Attributes:
        id: 1-based, in order of decreasing area.
        category_index: index into the vocabulary.
        category: class name.
        isthing: thing (part, defect) or stuff (belt, floor).
        score: mean per-pixel score over the region, or the top-1 probability for a box.
        topk: ``[(category, probability)]`` best first, from the pooled region (or box) feature.
        bbox: ``(x1, y1, x2, y2)`` in original pixels, continuous (pixel ``i`` covers ``[i, i+1)``).
        area: number of original pixels in the mask.
        rle: COCO RLE of the ``[H, W]`` mask, ``{"size": [H, W], "counts": str}``.
        source: ``"region"`` (connected component) or ``"box"`` (a given box).
        anchor: ``(x, y)`` original pixel inside the mask, where the overlay puts the label.
    """

    id: int
    category_index: int
    category: str
    isthing: bool
    score: float
    topk: list[tuple[str, float]]
    bbox: tuple[float, float, float, float]
    area: int
    rle: dict[str, Any]
    source: str = "region"
    anchor: tuple[int, int] = (0, 0)

    def mask(self) -> np.ndarray:
        """``[H, W]`` bool mask decoded from :attr:`rle`."""
        return decode_rle(self.rle)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category,
            "category_index": self.category_index,
            "isthing": self.isthing,
            "score": self.score,
            "topk": [{"category": name, "prob": prob} for name, prob in self.topk],
            "bbox": [float(v) for v in self.bbox],
            "area": self.area,
            "mask": {"size": list(self.rle["size"]), "counts": self.rle["counts"]},
            "source": self.source,
        }


@dataclass
class SegmentResult:
    """Predictions for one image, at its original size.

    Attributes:
        labels: ``[H, W]`` class index per pixel (uint8 when K < 256, else uint16).
        scores: ``[H, W]`` float32 softmax probability of the pixel's class.
        segments: regions (or boxes), largest first.
        vocab: the vocabulary the indices refer to.
        width, height: original image size in pixels (after EXIF orientation).
        model: model name for reports.
        input_size: longest side of the model input, in pixels.
        mode: ``"regions"`` or ``"boxes"``.
        min_area: regions smaller than this many original pixels were dropped.
        file: the image file, when segmented from a path.
        image: the image (possibly a downscaled copy) used by :meth:`overlay`.
    """

    labels: np.ndarray
    scores: np.ndarray
    segments: list[Segment]
    vocab: Vocabulary
    width: int
    height: int
    model: str = ""
    input_size: int = 0
    mode: str = "regions"
    min_area: int = 0
    file: Optional[str] = None
    image: Optional[Image.Image] = field(default=None, repr=False, compare=False)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in original pixels."""
        return self.width, self.height

    def class_areas(self) -> list[tuple[str, float]]:
        """``[(class name, share of the image's pixels)]`` for the classes present, largest first."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.vocab))
        total = max(1, int(counts.sum()))
        order = np.argsort(-counts, kind="stable")
        return [(self.vocab.names[k], float(counts[k]) / total) for k in order if counts[k] > 0]

    def to_json(self) -> dict[str, Any]:
        """The JSON document written as ``NAME.json`` (see ``densevlm segment --help``)."""
        return {
            "schema": SCHEMA,
            "file": self.file,
            "width": self.width,
            "height": self.height,
            "model": self.model,
            "input_size": self.input_size,
            "mode": self.mode,
            "min_area": self.min_area,
            "vocabulary": {"names": list(self.vocab.names), "isthing": list(self.vocab.is_thing)},
            "class_areas": [{"category": name, "share": share} for name, share in self.class_areas()],
            "segments": [s.to_json() for s in self.segments],
        }

    def overlay(self, image: Optional[Image.Image] = None, max_side: int = 2048) -> Image.Image:
        """The image with stuff tinted, things outlined, labels and a legend panel on the right.

        Args:
            image: what to draw on (default: :attr:`image`); resized to the display size.
            max_side: longest side of the drawn image (larger images are downscaled; images
                under 512 px are upscaled by an integer factor so labels stay readable).
        """
        from densevlm.inference.overlay import render_overlay

        base = image if image is not None else self.image
        if base is None:
            raise DenseVLMError("this result has no image to draw on; pass image= to overlay()")
        return render_overlay(to_rgb(base), self.labels, self.segments, self.vocab, max_side=max_side)


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


def _nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """For each of ``n_out`` output pixels, the input pixel whose area holds its centre."""
    idx = ((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out)).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def pixel_predictions(dense: torch.Tensor, text: torch.Tensor, temperature: float, plan: Letterbox,
                      max_chunk_elements: int = _MAX_CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax class and its softmax probability per input pixel, cropped to the letterbox content.

    Args:
        dense: ``[C, h, w]`` dense map of one image (``h * p`` = input height).
        text: ``[K, C]`` class embeddings.
        temperature: softmax temperature (``model.logit_scale``).
        plan: the image's letterbox.

    Returns:
        ``([plan.height, plan.width] int64 labels, same-shape float32 probabilities)``.
    """
    logits = temperature * torch.einsum("kc,chw->khw", text, dense)
    k = logits.shape[0]
    size = (plan.input_height, plan.input_width)
    per_class = plan.input_height * plan.input_width
    chunk = max(1, max_chunk_elements // per_class)
    best = torch.full((plan.height, plan.width), float("-inf"), device=dense.device)
    arg = torch.zeros((plan.height, plan.width), dtype=torch.int64, device=dense.device)
    lse = torch.full((plan.height, plan.width), float("-inf"), device=dense.device)
    for start in range(0, k, chunk):
        up = F.interpolate(logits[None, start : start + chunk], size=size, mode="bilinear", align_corners=False)[0]
        up = up[:, : plan.height, : plan.width]
        value, index = up.max(dim=0)
        better = value > best
        arg = torch.where(better, index + start, arg)
        best = torch.where(better, value, best)
        lse = torch.logaddexp(lse, torch.logsumexp(up, dim=0))
    return arg, torch.exp(best - lse)


def _to_original(labels: np.ndarray, scores: torch.Tensor, plan: Letterbox) -> tuple[np.ndarray, np.ndarray]:
    """Resize content-size maps to the original size: labels nearest, scores bilinear."""
    h0, w0 = plan.original_height, plan.original_width
    if labels.shape != (h0, w0):
        labels = labels[_nearest_index(h0, labels.shape[0])][:, _nearest_index(w0, labels.shape[1])]
    if scores.shape != (h0, w0):
        scores = F.interpolate(scores[None, None].float(), size=(h0, w0), mode="bilinear", align_corners=False)[0, 0]
    return np.ascontiguousarray(labels), scores.float().cpu().numpy()


def _topk(probs: torch.Tensor, vocab: Vocabulary, top_k: int) -> list[list[tuple[str, float]]]:
    """``[N, K]`` probabilities -> per row the ``top_k`` (name, prob) pairs, best first."""
    k = min(top_k, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    return [
        [(vocab.names[int(i)], float(v)) for v, i in zip(row_v.tolist(), row_i.tolist())]
        for row_v, row_i in zip(values, indices)
    ]


def _encode_rle(mask_crop: np.ndarray, where: tuple[slice, slice], height: int, width: int) -> dict[str, Any]:
    """COCO RLE of a full ``[height, width]`` mask that is ``mask_crop`` at ``where`` and 0 elsewhere."""
    full = np.zeros((height, width), dtype=bool)
    full[where] = mask_crop
    return encode_rle(full)


@dataclass
class _Grid:
    """The smallest label map whose nearest-neighbour resize is the original-size one (the "base").

    For an image larger than the model input the base is the content-size map and every base
    pixel stands for a block of original pixels; otherwise it is the original map itself (blocks
    of one pixel). Regions are found and pooled on the base, which is cheap for big photos, and
    nearest-neighbour resizing keeps 8-connectivity, so they are the original map's regions.

    Attributes:
        labels: ``[hb, wb]`` base label map.
        rows, cols: base row (column) of each original row (column).
        row_sizes, col_sizes, row_starts, col_starts: the original rows (columns) of each base row (column).
        token_rows, token_cols: model token row (column) of each base row (column).
    """

    labels: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    row_sizes: np.ndarray
    col_sizes: np.ndarray
    row_starts: np.ndarray
    col_starts: np.ndarray
    token_rows: np.ndarray
    token_cols: np.ndarray

    @classmethod
    def build(cls, content: np.ndarray, labels: np.ndarray, plan: Letterbox, patch_size: int) -> "_Grid":
        h0, w0 = labels.shape
        to_content_rows = _nearest_index(h0, plan.height)
        to_content_cols = _nearest_index(w0, plan.width)
        if plan.height <= h0 and plan.width <= w0:
            base, rows, cols = content, to_content_rows, to_content_cols
            token_rows = np.arange(plan.height) // patch_size
            token_cols = np.arange(plan.width) // patch_size
        else:
            base, rows, cols = labels, np.arange(h0), np.arange(w0)
            token_rows = to_content_rows // patch_size
            token_cols = to_content_cols // patch_size
        row_sizes = np.bincount(rows, minlength=base.shape[0])
        col_sizes = np.bincount(cols, minlength=base.shape[1])
        row_starts = np.concatenate([[0], np.cumsum(row_sizes)[:-1]])
        col_starts = np.concatenate([[0], np.cumsum(col_sizes)[:-1]])
        return cls(base, rows, cols, row_sizes, col_sizes, row_starts, col_starts, token_rows, token_cols)

    def block_areas(self, where: tuple[slice, slice]) -> np.ndarray:
        """Original pixels per base pixel of the ``where`` crop of the base."""
        return np.outer(self.row_sizes[where[0]], self.col_sizes[where[1]]).astype(np.float64)

    def original_where(self, where: tuple[slice, slice]) -> tuple[slice, slice]:
        """The original-pixel slices covered by a base crop."""
        r0, r1, c0, c1 = where[0].start, where[0].stop - 1, where[1].start, where[1].stop - 1
        return (slice(int(self.row_starts[r0]), int(self.row_starts[r1] + self.row_sizes[r1])),
                slice(int(self.col_starts[c0]), int(self.col_starts[c1] + self.col_sizes[c1])))

    def original_mask(self, mask: np.ndarray, where: tuple[slice, slice]) -> tuple[np.ndarray, tuple[slice, slice]]:
        """A base-crop mask at original resolution, and where it sits in the original image."""
        out = self.original_where(where)
        local_rows = self.rows[out[0]] - where[0].start
        local_cols = self.cols[out[1]] - where[1].start
        return mask[local_rows][:, local_cols], out


@dataclass
class _Region:
    """A connected region in base coordinates: class, crop, mask in the crop, area in original pixels."""

    category_index: int
    where: tuple[slice, slice]
    mask: np.ndarray
    area: int


def _find_regions(grid: _Grid, min_area: int) -> list[_Region]:
    """8-connected components of each class with at least ``min_area`` original pixels."""
    from scipy import ndimage

    regions = []
    class_boxes = ndimage.find_objects(grid.labels.astype(np.int32) + 1)
    for k, class_box in enumerate(class_boxes):
        if class_box is None:
            continue
        components, n = ndimage.label(grid.labels[class_box] == k, structure=_EIGHT_CONNECTED)
        areas = np.rint(np.bincount(components.ravel(), weights=grid.block_areas(class_box).ravel(), minlength=n + 1))
        for i, box in enumerate(ndimage.find_objects(components), start=1):
            if box is None or areas[i] < max(1, min_area):
                continue
            where = (
                slice(class_box[0].start + box[0].start, class_box[0].start + box[0].stop),
                slice(class_box[1].start + box[1].start, class_box[1].start + box[1].stop),
            )
            regions.append(_Region(k, where, components[box] == i, int(areas[i])))
    return regions


def _token_weights(regions: list[_Region], grid: _Grid, shape: tuple[int, int]) -> torch.Tensor:
    """``[N, h, w]`` original pixels of each region in each token cell (its area-weighted share)."""
    out = np.zeros((len(regions), shape[0], shape[1]), dtype=np.float64)
    for n, region in enumerate(regions):
        rows = grid.token_rows[region.where[0]]
        cols = grid.token_cols[region.where[1]]
        row_starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        col_starts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]])
        counts = np.add.reduceat(region.mask * grid.block_areas(region.where), row_starts, axis=0)
        counts = np.add.reduceat(counts, col_starts, axis=1)
        out[n][np.ix_(rows[row_starts], cols[col_starts])] = counts
    return torch.from_numpy(out.astype(np.float32))


def _anchor(region: _Region, grid: _Grid) -> tuple[int, int]:
    """Original ``(x, y)`` of the centre of the region's base pixel closest to its centroid."""
    ys, xs = np.nonzero(region.mask)
    weights = grid.block_areas(region.where)[ys, xs]
    cy, cx = np.average(ys, weights=weights), np.average(xs, weights=weights)
    nearest = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    row = region.where[0].start + int(ys[nearest])
    col = region.where[1].start + int(xs[nearest])
    return int(grid.col_starts[col] + grid.col_sizes[col] // 2), int(grid.row_starts[row] + grid.row_sizes[row] // 2)


def _region_segments(dense: torch.Tensor, text: torch.Tensor, temperature: float, grid: _Grid,
                     scores: np.ndarray, vocab: Vocabulary, top_k: int, min_area: int) -> list[Segment]:
    regions = _find_regions(grid, min_area)
    if not regions:
        return []
    weights = _token_weights(regions, grid, (dense.shape[-2], dense.shape[-1])).to(dense.device)
    feats = weighted_pool(dense, weights)
    probs = torch.softmax(temperature * feats.double() @ text.double().t(), dim=1).cpu()
    candidates = _topk(probs, vocab, top_k)
    h0, w0 = scores.shape
    segments = []
    for region, topk in zip(regions, candidates):
        mask, where = grid.original_mask(region.mask, region.where)
        k = region.category_index
        segments.append(Segment(
            id=0,
            category_index=k,
            category=vocab.names[k],
            isthing=bool(vocab.is_thing[k]),
            score=float(scores[where][mask].mean(dtype=np.float64)),
            topk=topk,
            bbox=(float(where[1].start), float(where[0].start), float(where[1].stop), float(where[0].stop)),
            area=region.area,
            rle=_encode_rle(mask.astype(np.uint8), where, h0, w0),
            source="region",
            anchor=_anchor(region, grid),
        ))
    return segments


def _box_segments(box_features: torch.Tensor, boxes: np.ndarray, text: torch.Tensor, temperature: float,
                  vocab: Vocabulary, top_k: int, height: int, width: int) -> list[Segment]:
    probs = torch.softmax(temperature * box_features.double() @ text.double().t(), dim=1).cpu()
    candidates = _topk(probs, vocab, top_k)
    best = probs.argmax(dim=1).tolist()
    segments = []
    for box, topk, k in zip(boxes, candidates, best):
        x1, y1, x2, y2 = (float(v) for v in box)
        where = (slice(math.floor(y1), math.ceil(y2)), slice(math.floor(x1), math.ceil(x2)))
        crop = np.ones((where[0].stop - where[0].start, where[1].stop - where[1].start), dtype=np.uint8)
        segments.append(Segment(
            id=0,
            category_index=k,
            category=vocab.names[k],
            isthing=bool(vocab.is_thing[k]),
            score=float(probs[len(segments), k]),
            topk=topk,
            bbox=(x1, y1, x2, y2),
            area=int(crop.size),
            rle=_encode_rle(crop, where, height, width),
            source="box",
            anchor=(where[1].start, where[0].start),
        ))
    return segments


def predict(
    dense: torch.Tensor,
    text: torch.Tensor,
    plan: Letterbox,
    vocab: Vocabulary,
    *,
    temperature: float,
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
        temperature: softmax temperature (``model.logit_scale``).
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
    arg, prob = pixel_predictions(dense, text, temperature, plan)
    content = arg.cpu().numpy().astype(label_dtype)
    labels, scores = _to_original(content, prob, plan)
    if box_features is not None and boxes is not None:
        segments = _box_segments(box_features.float().to(dense.device), boxes, text, temperature, vocab, top_k,
                                 plan.original_height, plan.original_width)
    else:
        grid = _Grid.build(content, labels, plan, patch_size)
        segments = _region_segments(dense, text, temperature, grid, scores, vocab, top_k, min_area)
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
        model: a :class:`~densevlm.model.DenseModel` (or an object with the same interface,
            see the module docstring).
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
    with torch.inference_mode():
        text = model.embed_vocabulary(vocab)
        x = x[None].to(text.device)
        dense = model.encode_dense(x)[0]
        box_features = None
        if box_array is not None:
            scaled = torch.as_tensor(box_array * plan.scale, dtype=torch.float32, device=text.device)
            box_features = roi_pool(dense[None], [scaled], int(model.patch_size))
        labels, scores, segments, used_min_area = predict(
            dense, text, plan, vocab, temperature=float(model.logit_scale), patch_size=int(model.patch_size),
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
