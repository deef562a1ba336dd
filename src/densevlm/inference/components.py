"""Connected regions of a label map, and the segments made of them (or of given boxes).

Regions are the 8-connected components of each class in the original-size label map (found on
the content-size map when the photo is larger than the input, which is equivalent because
nearest-neighbour upscaling keeps connectivity, and much cheaper). Regions smaller than
``min_area`` original pixels are specks and get no segment (their pixels keep their class in
the label map). A region's candidates (``topk``) come from the dense map mean-pooled under the
region (token weights = the share of the region's pixels in each token cell), so they may rank
another class above the region's pixel-wise class. A given box is classified from its RoI
feature instead and becomes one segment whose mask is the box's pixels.

How, in a few whole-map passes rather than a mask, a crop and an RLE per region: the regions
are numbered in one ``[hb, wb]`` component map (:func:`_components`: class by class, each in
scipy's raster order); areas and token weights are ``bincount``\\ s over it; one stable sort
of the map lists every region's base pixels in raster order (:class:`_Pixels`: boxes,
centroids, anchors); runs of equal ids along the rows of the map, each base row or column
repeated as often as the original has it (:func:`_runs`), give the RLE (runs down the columns,
the order COCO stores). For a photo larger than the input, a region's mean score is taken from
block sums of the content-size score map (:func:`_mean_scores`), so the original-size score map
is never needed. What depends only on the image and input sizes (:class:`LabelGrid`) is made
once per size pair. The results are those of the per-region computation to the bit, the mean
scores of a photo larger than the input to the float32 round-off of the original map it never
makes (``tests/inference/test_components.py``).

Everything here is numpy: the dense map ``[C, h, w]`` and the class embeddings ``[K, C]`` are
float32 arrays (the PyTorch engine converts its dense map once, see
:func:`densevlm.inference.segment.predict`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from densevlm.imaging import Letterbox
from densevlm.inference.maps import block_weights, nearest_index
from densevlm.inference.result import Segment
from densevlm.regions import similarity
from densevlm.regions.pooling import weighted_pool
from densevlm.regions.rle import compress_counts, encode_rle
from densevlm.vocab import Vocabulary

__all__ = ["LabelGrid", "label_grid", "region_segments", "box_segments"]

_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = True  # 8-connected within a plane, never across planes


def _classify(logits: np.ndarray, vocab: Vocabulary, top_k: int) -> tuple[np.ndarray, list[list[tuple[str, float]]]]:
    """``[N, K]`` logits -> ``[N, K]`` float64 probabilities and per row the ``top_k`` (name,
    probability) pairs, best first."""
    probs = similarity.probabilities(np.asarray(logits, dtype=np.float64))
    values, indices = similarity.top_k(probs, top_k)
    return probs, [
        [(vocab.names[int(i)], float(v)) for v, i in zip(row_v, row_i)]
        for row_v, row_i in zip(values.tolist(), indices.tolist())
    ]


def _segment(vocab: Vocabulary, k: int, **fields: Any) -> Segment:
    """A segment of class ``k`` (id 0 until :func:`~densevlm.inference.segment.predict` numbers them)."""
    return Segment(id=0, category_index=k, category=vocab.names[k], isthing=bool(vocab.is_thing[k]), **fields)


@dataclass(frozen=True)
class LabelGrid:
    """How the "base" label map, the smallest one whose nearest-neighbour resize is the
    original-size map, lies on the original image and on the model's tokens.

    For an image larger than the model input (in both directions) the base is the content-size
    map and every base pixel stands for a block of original pixels; otherwise it is the
    original map itself (blocks of one pixel). Regions are found and pooled on the base, which
    is cheap for big photos, and nearest-neighbour resizing keeps 8-connectivity, so they are
    the original map's regions. Made by :func:`label_grid`; every array is read-only.

    Attributes:
        from_content: the base is the content-size map (else the original-size one).
        rows, cols: base row (column) of each original row (column), non-decreasing.
        row_sizes, col_sizes, row_starts, col_starts: the original rows (columns) of each base row (column).
        tokens: ``[hb, wb]`` flat index ``row * w + col`` of the model token under each base pixel.
        block_areas: ``[hb, wb]`` float64 original pixels per base pixel, or None when all are 1.
    """

    from_content: bool
    rows: np.ndarray
    cols: np.ndarray
    row_sizes: np.ndarray
    col_sizes: np.ndarray
    row_starts: np.ndarray
    col_starts: np.ndarray
    tokens: np.ndarray
    block_areas: Optional[np.ndarray]

    @property
    def shape(self) -> tuple[int, int]:
        """``(hb, wb)``, the base map's shape."""
        return len(self.row_sizes), len(self.col_sizes)

    @property
    def original_shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.cols)

    def base(self, content: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The base map: ``content`` (``[plan.height, plan.width]``) or ``labels`` (original size)."""
        return content if self.from_content else labels


def label_grid(plan: Letterbox, patch_size: int) -> LabelGrid:
    """The :class:`LabelGrid` of an image letterboxed by ``plan`` for a model with ``patch_size``
    (cached per geometry)."""
    return _label_grid(plan.original_height, plan.original_width, plan.height, plan.width,
                       plan.input_width // patch_size, patch_size)


@functools.lru_cache(maxsize=64)
def _label_grid(h0: int, w0: int, content_h: int, content_w: int, token_w: int, patch_size: int) -> LabelGrid:
    to_content_rows = nearest_index(h0, content_h)
    to_content_cols = nearest_index(w0, content_w)
    from_content = content_h <= h0 and content_w <= w0
    if from_content:
        rows, cols = to_content_rows, to_content_cols
        token_rows = np.arange(content_h) // patch_size
        token_cols = np.arange(content_w) // patch_size
    else:
        rows, cols = np.arange(h0), np.arange(w0)
        token_rows = to_content_rows // patch_size
        token_cols = to_content_cols // patch_size
    row_sizes = np.bincount(rows, minlength=len(token_rows))
    col_sizes = np.bincount(cols, minlength=len(token_cols))
    row_starts = np.cumsum(row_sizes) - row_sizes
    col_starts = np.cumsum(col_sizes) - col_sizes
    tokens = token_rows[:, None] * token_w + token_cols[None, :]
    blocks = np.outer(row_sizes, col_sizes).astype(np.float64)
    block_areas = None if (blocks == 1).all() else blocks
    for a in (rows, cols, row_sizes, col_sizes, row_starts, col_starts, tokens, blocks):
        a.setflags(write=False)
    return LabelGrid(from_content, rows, cols, row_sizes, col_sizes, row_starts, col_starts, tokens, block_areas)


def _components(base: np.ndarray, class_areas: np.ndarray, min_area: int) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of each class that has at least ``min_area`` original pixels
    (``class_areas``; a smaller class holds only specks): ``([hb, wb] int32 ids, [n + 1] class
    of each id)``, ids 1..n in class order, then in scipy's raster order of each component's
    first pixel; 0 marks the pixels of the skipped classes.

    One ``scipy.ndimage.label`` call over the ``[k, hb, wb]`` stack of the classes' masks with a
    structure that connects only within a plane numbers the components plane after plane, each
    plane in raster order: the numbering of one call per class, offset by the ones before."""
    from scipy import ndimage

    kept = np.flatnonzero(class_areas >= min_area)
    if kept.size == 0:
        return np.zeros(base.shape, dtype=np.int32), np.zeros(1, dtype=np.int64)
    masks = base[None] == kept.astype(base.dtype)[:, None, None]
    ids, _ = ndimage.label(masks, structure=_IN_PLANE)
    comp = ids.max(axis=0)
    last = ids.reshape(len(kept), -1).max(axis=1)  # the highest id of each plane (every kept class is present)
    return comp, np.concatenate([[0], np.repeat(kept.astype(np.int64), np.diff(last, prepend=0))])


def _runs(comp: np.ndarray, rows: np.ndarray, col_starts: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Runs of equal ids along the rows of the ``[len(rows), width]`` map whose row ``i`` is
    ``comp``'s row ``rows[i]`` with ``comp``'s column ``c`` spanning columns ``col_starts[c]``
    onwards: ``(flat row-major start of each run, its id)``, in order. A run that goes on from
    the end of a row into the next is one run (as RLE counts it)."""
    change = np.ones(comp.shape, dtype=bool)
    np.not_equal(comp[:, 1:], comp[:, :-1], out=change[:, 1:])
    r, c = np.nonzero(change)
    if comp.shape == (len(rows), width):  # every row and column once: the map itself
        starts, ids = r * width + c, comp[r, c]
    else:
        per_row = np.bincount(r, minlength=comp.shape[0])
        counts = per_row[rows]
        pick = _ranges((np.cumsum(per_row) - per_row)[rows], counts)
        starts = np.repeat(np.arange(len(rows), dtype=np.int64) * width, counts) + col_starts[c[pick]]
        ids = comp[r[pick], c[pick]]
    keep = np.ones(len(ids), dtype=bool)
    np.not_equal(ids[1:], ids[:-1], out=keep[1:])
    return starts[keep], ids[keep]


def _ranges(lo: np.ndarray, size: np.ndarray) -> np.ndarray:
    """``concatenate([arange(l, l + s) for l, s in zip(lo, size)])`` without the Python loop."""
    ends = np.cumsum(size)
    out = np.repeat(lo - (ends - size), size)
    out += np.arange(len(out))
    return out


def _region_runs(starts: np.ndarray, ids: np.ndarray, total: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of ids ``0 .. n - 1`` (of :func:`_runs` of a map of ``total`` pixels):
    ``(starts, lengths, offsets)``, id ``i`` owning runs ``offsets[i]:offsets[i + 1]`` in order."""
    lengths = np.diff(starts, append=total)
    order = np.argsort(ids, kind="stable")
    offsets = np.searchsorted(ids[order], np.arange(n + 1))
    pick = order[: offsets[-1]]
    return starts[pick], lengths[pick], offsets


def _rles(starts: np.ndarray, lengths: np.ndarray, offsets: np.ndarray, height: int, width: int
          ) -> list[dict[str, Any]]:
    """COCO RLE per region from its column-major runs (compressed by :func:`~densevlm.regions.rle.compress_counts`).

    A region's counts are its (gap, run) pairs, then the gap to the image's end when there is
    one, laid out in one array; each region's slice goes to the compressor as it is (no Python
    lists)."""
    n = len(offsets) - 1
    ends = starts + lengths
    previous = np.append(0, ends[:-1])
    previous[offsets[:-1]] = 0  # each region's first gap starts at pixel 0
    tails = height * width - ends[offsets[1:] - 1]
    tail_at = 2 * offsets[1:] + np.arange(n)  # region i's tail follows its pairs (and the i tails before)
    counts = np.empty(2 * len(starts) + n, dtype=np.int64)
    pair_at = np.ones(len(counts), dtype=bool)
    pair_at[tail_at] = False
    counts[pair_at] = np.stack([starts - previous, lengths], axis=1).ravel()
    counts[tail_at] = tails
    first = (tail_at - 2 * np.diff(offsets)).tolist()
    last = (tail_at + (tails > 0)).tolist()
    runs = [counts[a:b] for a, b in zip(first, last)]
    return [{"size": [height, width], "counts": c} for c in compress_counts(runs, height, width)]


@dataclass
class _Pixels:
    """The base pixels of the kept regions, region after region, each in raster order."""

    index: np.ndarray  # flat base index
    rows: np.ndarray
    cols: np.ndarray
    first: np.ndarray  # [n + 1] offsets: region i owns index[first[i]:first[i + 1]]
    owner: np.ndarray  # region of each pixel

    @classmethod
    def of(cls, slots: np.ndarray, n: int) -> "_Pixels":
        """From the ``[hb, wb]`` map of region numbers (``n`` for every other pixel)."""
        flat = slots.ravel()
        counts = np.bincount(flat, minlength=n + 1)[:n]
        first = np.concatenate([[0], np.cumsum(counts)])
        index = np.argsort(flat, kind="stable")[: first[-1]]  # radix sort for 16-bit slots
        rows, cols = np.divmod(index, slots.shape[1])
        return cls(index, rows, cols, first, np.repeat(np.arange(n), counts))

    def sums(self, values: np.ndarray) -> np.ndarray:
        """Per region, the sum of a per-pixel array (in pixel order)."""
        return np.add.reduceat(values, self.first[:-1])


def _anchors(pixels: _Pixels, grid: LabelGrid, tops: np.ndarray, lefts: np.ndarray) -> list[tuple[int, int]]:
    """Original ``(x, y)`` of the centre of the base pixel closest to each region's centroid
    (weighted by the original pixels each base pixel stands for; the first in raster order on
    a tie). The sums are of integers, exact in float64 in any order, and the distances are
    taken in the region's bounding box as a crop, so they are the numbers a per-region
    computation gets."""
    rows = pixels.rows - tops[pixels.owner]
    cols = pixels.cols - lefts[pixels.owner]
    if grid.block_areas is None:
        total = np.diff(pixels.first).astype(np.float64)
        cy = pixels.sums(rows) / total
        cx = pixels.sums(cols) / total
    else:
        weights = grid.block_areas.ravel()[pixels.index]
        total = pixels.sums(weights)
        cy = pixels.sums(rows * weights) / total
        cx = pixels.sums(cols * weights) / total
    dist = (rows - cy[pixels.owner]) ** 2 + (cols - cx[pixels.owner]) ** 2
    lowest = np.minimum.reduceat(dist, pixels.first[:-1])
    hits = np.flatnonzero(dist == lowest[pixels.owner])
    nearest = hits[np.searchsorted(hits, pixels.first[:-1])]
    row, col = pixels.rows[nearest], pixels.cols[nearest]
    x = grid.col_starts[col] + grid.col_sizes[col] // 2
    y = grid.row_starts[row] + grid.row_sizes[row] // 2
    return list(zip(x.tolist(), y.tolist()))


def _mean_scores(scores: np.ndarray, pixels: _Pixels, slots: np.ndarray, grid: LabelGrid, areas: np.ndarray
                 ) -> list[float]:
    """Each region's mean score over its original pixels, in float64.

    ``scores`` is the score map on the base grid. With blocks of one pixel that is the original
    map, and the mean is added in raster order (the order and precision of
    ``scores[mask].mean(dtype=np.float64)``). With larger blocks it is the content map, and the
    original map is its bilinear upscale (:func:`~densevlm.inference.maps.original_scores`), so
    the sum over each block is ``W_rows @ scores @ W_cols.T``
    (:func:`~densevlm.inference.maps.block_weights`); a region's mean is the sum of its blocks
    over its ``areas`` original pixels: the same number up to the float32 round-off of the
    original map's pixels (relative 1e-7; the original map is never made).
    """
    if grid.block_areas is None:
        flat, edges = scores.ravel(), pixels.first.tolist()
        values = flat[pixels.index]
        return [float(values[edges[i]: edges[i + 1]].mean(dtype=np.float64)) for i in range(len(areas))]
    (h0, w0), (hb, wb) = grid.original_shape, grid.shape
    sums = block_weights(h0, hb) @ scores.astype(np.float64) @ block_weights(w0, wb).T
    per_region = np.bincount(slots.ravel(), weights=sums.ravel(), minlength=len(areas) + 1)[: len(areas)]
    return (per_region / areas).tolist()


def region_segments(dense: np.ndarray, text: np.ndarray, logit_scale: float, grid: LabelGrid, base: np.ndarray,
                    scores: np.ndarray, vocab: Vocabulary, top_k: int, min_area: int) -> list[Segment]:
    """A segment per region of the ``base`` map (see :class:`LabelGrid`) of at least ``min_area``
    original pixels, from the ``[C, h, w]`` dense map, ``[K, C]`` class embeddings and the score
    map of the same grid as ``base`` (``grid.base(content_scores, original_scores)``; see the
    module docstring), in class order, then raster order."""
    min_area = max(1, min_area)
    blocks = None if grid.block_areas is None else grid.block_areas.ravel()
    class_areas = np.bincount(base.ravel(), weights=blocks)
    comp, classes = _components(base, class_areas, min_area)
    areas = np.bincount(comp.ravel(), weights=blocks, minlength=len(classes))
    if blocks is not None:
        areas = np.rint(areas).astype(np.int64)
    regions = np.flatnonzero(areas >= min_area)
    regions = regions[regions > 0]
    n = len(regions)
    if n == 0:
        return []
    slot = np.full(len(classes), n, dtype=np.uint16 if n < np.iinfo(np.uint16).max else np.int64)
    slot[regions] = np.arange(n)
    slots = slot[comp]

    h, w = dense.shape[-2:]
    mass = np.bincount(slots.ravel().astype(np.int64) * (h * w) + grid.tokens.ravel(), weights=blocks,
                       minlength=(n + 1) * h * w)[: n * h * w]
    feats = weighted_pool(dense, mass.reshape(n, h, w).astype(np.float32))
    logits = similarity.logits(feats.astype(np.float64), text.astype(np.float64), logit_scale)
    _, candidates = _classify(logits, vocab, top_k)

    pixels = _Pixels.of(slots, n)
    last = pixels.first[1:] - 1
    tops, bottoms = pixels.rows[pixels.first[:-1]], pixels.rows[last] + 1
    lefts = np.minimum.reduceat(pixels.cols, pixels.first[:-1])
    rights = np.maximum.reduceat(pixels.cols, pixels.first[:-1]) + 1
    anchors = _anchors(pixels, grid, tops, lefts)
    means = _mean_scores(scores, pixels, slots, grid, areas[regions].astype(np.float64))
    h0, w0 = grid.original_shape
    rles = _rles(*_region_runs(*_runs(slots.T, grid.cols, grid.row_starts, h0), h0 * w0, n), h0, w0)
    y0, y1 = grid.row_starts[tops].tolist(), (grid.row_starts[bottoms - 1] + grid.row_sizes[bottoms - 1]).tolist()
    x0, x1 = grid.col_starts[lefts].tolist(), (grid.col_starts[rights - 1] + grid.col_sizes[rights - 1]).tolist()
    return [
        _segment(vocab, int(classes[region]), score=means[i], topk=candidates[i],
                 bbox=(float(x0[i]), float(y0[i]), float(x1[i]), float(y1[i])), area=int(areas[region]), rle=rles[i],
                 source="region", anchor=anchors[i])
        for i, region in enumerate(regions.tolist())
    ]


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
            rle=encode_rle(crop, size=(height, width), offset=(where[0].start, where[1].start)), source="box",
            anchor=(where[1].start, where[0].start),
        ))
    return segments
