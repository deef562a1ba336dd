"""Connected regions of a label map, and the segments made of them (or of given boxes).

Regions are the 8-connected components of each class in the original-size label map (found on
the content-size map when the photo is larger than the input, which is equivalent because
nearest-neighbour upscaling keeps connectivity, and much cheaper). Regions smaller than
``min_area`` original pixels are specks and get no segment (their pixels keep their class in
the label map). A region's candidates (``topk``) come from the dense map mean-pooled under the
region (token weights = the share of the region's pixels in each token cell), so they may rank
another class above the region's pixel-wise class. A given box is classified from its RoI
feature instead and becomes one segment whose mask is the box's pixels.

Everything here is numpy: the dense map ``[C, h, w]`` and the class embeddings ``[K, C]`` are
float32 arrays (the PyTorch engine converts its dense map once, see
:func:`densevlm.inference.segment.predict`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from densevlm.imaging import Letterbox
from densevlm.inference.maps import nearest_index
from densevlm.inference.result import Segment
from densevlm.regions import similarity
from densevlm.regions.pooling import grid_token_weights, weighted_pool
from densevlm.regions.rle import encode_rle
from densevlm.vocab import Vocabulary

__all__ = ["LabelGrid", "region_segments", "box_segments"]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _classify(logits: np.ndarray, vocab: Vocabulary, top_k: int) -> tuple[np.ndarray, list[list[tuple[str, float]]]]:
    """``[N, K]`` logits -> ``[N, K]`` float64 probabilities and per row the ``top_k`` (name,
    probability) pairs, best first."""
    probs = similarity.probabilities(np.asarray(logits, dtype=np.float64))
    values, indices = similarity.top_k(probs, top_k)
    return probs, [
        [(vocab.names[int(i)], float(v)) for v, i in zip(row_v.tolist(), row_i.tolist())]
        for row_v, row_i in zip(values, indices)
    ]


def _segment(vocab: Vocabulary, k: int, **fields: Any) -> Segment:
    """A segment of class ``k`` (id 0 until :func:`~densevlm.inference.segment.predict` numbers them)."""
    return Segment(id=0, category_index=k, category=vocab.names[k], isthing=bool(vocab.is_thing[k]), **fields)


def _placed_rle(mask_crop: np.ndarray, where: tuple[slice, slice], height: int, width: int) -> dict[str, Any]:
    """COCO RLE of a full ``[height, width]`` mask that is ``mask_crop`` at ``where`` and 0 elsewhere
    (encoded from the crop, at a cost in crop pixels)."""
    return encode_rle(mask_crop, size=(height, width), offset=(where[0].start, where[1].start))


@dataclass
class LabelGrid:
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
    def build(cls, content: np.ndarray, labels: np.ndarray, plan: Letterbox, patch_size: int) -> "LabelGrid":
        h0, w0 = labels.shape
        to_content_rows = nearest_index(h0, plan.height)
        to_content_cols = nearest_index(w0, plan.width)
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


def _find_regions(grid: LabelGrid, min_area: int) -> list[_Region]:
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


def _token_weights(regions: list[_Region], grid: LabelGrid, shape: tuple[int, int],
                   chunk_elements: int = 1 << 22) -> np.ndarray:
    """``[N, h, w]`` float32 original pixels of each region in each token cell (its area-weighted
    share): :func:`~densevlm.regions.pooling.grid_token_weights` of the regions' base masks
    (weighted by the original pixels each base pixel stands for), a chunk of regions at a time."""
    hb, wb = grid.labels.shape
    areas = np.outer(grid.row_sizes, grid.col_sizes).astype(np.float32)
    out = np.empty((len(regions), shape[0], shape[1]), dtype=np.float32)
    step = max(1, chunk_elements // (hb * wb))
    for start in range(0, len(regions), step):
        part = regions[start: start + step]
        masks = np.zeros((len(part), hb, wb), dtype=np.float32)
        for n, region in enumerate(part):
            masks[n][region.where] = region.mask * areas[region.where]
        out[start: start + len(part)] = grid_token_weights(masks, grid.token_rows, grid.token_cols, shape)
    return out


def _anchor(region: _Region, grid: LabelGrid) -> tuple[int, int]:
    """Original ``(x, y)`` of the centre of the region's base pixel closest to its centroid."""
    ys, xs = np.nonzero(region.mask)
    row_w = grid.row_sizes[region.where[0]][ys].astype(np.float64)
    weights = row_w * grid.col_sizes[region.where[1]][xs]
    total = weights.sum()
    cy, cx = float(ys @ weights) / total, float(xs @ weights) / total
    nearest = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    row = region.where[0].start + int(ys[nearest])
    col = region.where[1].start + int(xs[nearest])
    return int(grid.col_starts[col] + grid.col_sizes[col] // 2), int(grid.row_starts[row] + grid.row_sizes[row] // 2)


def region_segments(dense: np.ndarray, text: np.ndarray, logit_scale: float, grid: LabelGrid,
                    scores: np.ndarray, vocab: Vocabulary, top_k: int, min_area: int) -> list[Segment]:
    """A segment per region of ``grid`` of at least ``min_area`` original pixels, from the ``[C, h, w]``
    dense map, ``[K, C]`` class embeddings and the ``[H0, W0]`` score map (see the module docstring)."""
    regions = _find_regions(grid, min_area)
    if not regions:
        return []
    feats = weighted_pool(dense, _token_weights(regions, grid, (dense.shape[-2], dense.shape[-1])))
    logits = similarity.logits(feats.astype(np.float64), text.astype(np.float64), logit_scale)
    _, candidates = _classify(logits, vocab, top_k)
    h0, w0 = scores.shape
    segments = []
    for region, topk in zip(regions, candidates):
        mask, where = grid.original_mask(region.mask, region.where)
        k = region.category_index
        segments.append(_segment(
            vocab, k, score=float(scores[where][mask].mean(dtype=np.float64)), topk=topk,
            bbox=(float(where[1].start), float(where[0].start), float(where[1].stop), float(where[0].stop)),
            area=region.area, rle=_placed_rle(mask, where, h0, w0), source="region",
            anchor=_anchor(region, grid),
        ))
    return segments


def box_segments(box_logits: np.ndarray, boxes: np.ndarray, vocab: Vocabulary, top_k: int, height: int,
                 width: int) -> list[Segment]:
    """A segment per ``[N, 4]`` XYXY original-pixel box of the ``height x width`` image, classified
    by its ``[N, K]`` logits (``logit_scale`` x the cosine of its RoI feature to each class, as
    :func:`densevlm.inference.segment.box_logits` makes them); its mask is the box."""
    probs, candidates = _classify(box_logits, vocab, top_k)
    best = probs.argmax(axis=1).tolist()
    segments = []
    for box, topk, k in zip(boxes, candidates, best):
        x1, y1, x2, y2 = (float(v) for v in box)
        where = (slice(math.floor(y1), math.ceil(y2)), slice(math.floor(x1), math.ceil(x2)))
        crop = np.ones((where[0].stop - where[0].start, where[1].stop - where[1].start), dtype=bool)
        segments.append(_segment(
            vocab, k, score=float(probs[len(segments), k]), topk=topk, bbox=(x1, y1, x2, y2), area=int(crop.size),
            rle=_placed_rle(crop, where, height, width), source="box", anchor=(where[1].start, where[0].start),
        ))
    return segments
