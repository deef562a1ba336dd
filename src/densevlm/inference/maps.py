"""Pixel maps of one image: the class and its probability per original pixel, in numpy.

The dense map ``[C, h, w]`` (unit norm per token) is scored against the class embeddings
``[K, C]`` (:func:`densevlm.regions.similarity.cosine` times ``logit_scale``); the ``[K, h, w]``
logits are bilinearly upsampled to the model input (in chunks of classes, so the ``[K, H, W]``
stack never exists at once) where the argmax and the softmax probability of the winner are
taken. The letterbox is then undone: the content area is cropped and the label map (nearest)
and the score map (bilinear) are resized to the original image size. The ``K``-channel logits
are never resized to the original size, so a 6000x4000 photo costs a few hundred MB, not ``K``
times that.

Everything here is numpy (the runtime without PyTorch uses it as is, and the PyTorch engine
converts its dense map once); :func:`bilinear_resize` reproduces ``torch.nn.functional.
interpolate(mode="bilinear", align_corners=False)`` (half-pixel centres, edges clamped, no
antialiasing) to float32 round-off. :func:`pixel_predictions` also accepts tensors and then
returns tensors (the evaluation protocol's mIoU calls it so).

Cost. The index and weight tables of a resize depend only on the sizes and are made once per
size pair (:func:`nearest_index`, :func:`bilinear_taps` are cached and return read-only
arrays). The upsampled logits are laid out classes-last (``[H, W, K]``), where every step is a
contiguous pass; the winner's value is read by flat index, and the softmax denominator is a
matrix-vector product with a vector of ones (BLAS: 7x faster than numpy's reduction over a
16-long axis, whose per-row cost dominates at this size; the sum's order, and so the
probabilities' last bits, are BLAS's).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from densevlm.imaging import Letterbox
from densevlm.regions import similarity

__all__ = ["pixel_predictions", "original_labels", "original_scores", "block_weights", "nearest_index", "bilinear_taps",
           "bilinear_resize"]

# Size of the logit chunk upsampled at once (classes x input pixels): 16 M floats = 64 MB.
_MAX_CHUNK_ELEMENTS = 1 << 24


def _frozen(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for a in arrays:
        a.setflags(write=False)
    return arrays


@functools.lru_cache(maxsize=256)
def nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """For each of ``n_out`` output pixels, the input pixel whose area holds its centre
    (``[n_out]`` int64, non-decreasing; cached per size pair, read-only)."""
    idx = ((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out)).astype(np.int64)
    return _frozen(np.minimum(idx, n_in - 1))[0]


@functools.lru_cache(maxsize=256)
def bilinear_taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i0, i1, w1)`` of a bilinear resize of ``n_in`` samples to ``n_out``: output ``j`` is
    ``(1 - w1[j]) * x[i0[j]] + w1[j] * x[i1[j]]`` (cached per size pair, read-only).

    PyTorch's ``align_corners=False`` rule (``area_pixel_compute_source_index``): the source
    coordinate is ``(j + 0.5) * n_in / n_out - 0.5``, clamped at 0; ``i1`` stays on the last sample.
    """
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return _frozen(i0, i1, (src - i0).astype(np.float32))


@functools.lru_cache(maxsize=256)
def _weights(n_out: int, n_in: int, keep: int, repeat: int) -> tuple[np.ndarray, np.ndarray]:
    """``(1 - w1, w1)`` of the first ``keep`` taps, each repeated ``repeat`` times (the weights
    of a ``[..., n_out, repeat]`` axis pair spelled out, so the products run as one contiguous pass)."""
    w1 = bilinear_taps(n_out, n_in)[2][:keep]
    return _frozen(np.repeat(1.0 - w1, repeat), np.repeat(w1, repeat))


def bilinear_resize(array: np.ndarray, height: int, width: int, rows: int | None = None,
                    cols: int | None = None, channels_last: bool = False) -> np.ndarray:
    """Bilinear resize of the two spatial axes of ``array`` to ``height x width``.

    Every output value is ``(1 - b) * ((1 - a) * x00 + a * x10) + b * ((1 - a) * x01 + a * x11)``
    in float32 (rows first, then columns; :func:`bilinear_taps`), whatever the layout.

    Args:
        array: ``[..., h, w]``, or ``[h, w, ...]`` with ``channels_last``.
        rows, cols: keep only the first ``rows`` (``cols``) output rows (columns), e.g. the
            letterbox content of an upsampled map, without computing the rest.

    Returns:
        float32 C-contiguous ``[..., rows or height, cols or width]`` (``[rows, cols, ...]``
        with ``channels_last``).
    """
    array = np.asarray(array, dtype=np.float32)
    if not channels_last:
        lead = array.shape[:-2]
        moved = np.moveaxis(array.reshape((-1,) + array.shape[-2:]), 0, -1)
        out = bilinear_resize(moved, height, width, rows, cols, channels_last=True)
        return np.ascontiguousarray(np.moveaxis(out, -1, 0)).reshape(lead + out.shape[:2])
    h, w = array.shape[:2]
    rows, cols = rows or height, cols or width
    inner = int(np.prod(array.shape[2:], dtype=np.int64))
    r0, r1, _ = (t[:rows] for t in bilinear_taps(height, h))
    c0, c1, _ = (t[:cols] for t in bilinear_taps(width, w))
    flat = array.reshape(h, w * inner)
    top, bottom = _weights(height, h, rows, 1)
    tall = np.take(flat, r0, axis=0) * top[:, None] + np.take(flat, r1, axis=0) * bottom[:, None]
    tall = tall.reshape(rows, w, inner)
    left, right_w = _weights(width, w, cols, inner)
    out = np.take(tall, c0, axis=1).reshape(rows, cols * inner)
    out *= left
    right = np.take(tall, c1, axis=1).reshape(rows, cols * inner)
    right *= right_w
    out += right
    return out.reshape((rows, cols) + array.shape[2:])


def _first_argmax(up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(max, first index of the max)`` over the last axis of ``[H, W, K]``: ``up.argmax(-1)``
    and the values it points at (where a pixel holds a NaN, the value is NaN and the index
    meaningless: :func:`pixel_predictions` never takes it)."""
    flat = up.reshape(-1, up.shape[-1])
    index = flat.argmax(axis=1)
    return flat[np.arange(flat.shape[0]), index].reshape(up.shape[:-1]), index.reshape(up.shape[:-1])


@functools.lru_cache(maxsize=64)
def _ones(k: int) -> np.ndarray:
    return _frozen(np.ones(k, dtype=np.float32))[0]


def pixel_predictions(dense: Any, text: Any, logit_scale: float, plan: Letterbox,
                      max_chunk_elements: int = _MAX_CHUNK_ELEMENTS) -> tuple[Any, Any]:
    """Argmax class and its softmax probability per input pixel, cropped to the letterbox content.

    Args:
        dense: ``[C, h, w]`` dense map of one image (``h * p`` = input height), a numpy array
            or a tensor (any device).
        text: ``[K, C]`` class embeddings, of the same kind.
        logit_scale: ``model.logit_scale``.
        plan: the image's letterbox.

    Returns:
        ``([plan.height, plan.width] int64 labels, same-shape float32 probabilities)``: numpy
        arrays, or CPU tensors when ``dense`` is a tensor. Ties go to the lower class index.
    """
    as_tensor = not isinstance(dense, np.ndarray)
    if as_tensor:
        dense, text = dense.detach().float().cpu().numpy(), text.detach().float().cpu().numpy()
    logits = np.float32(logit_scale) * similarity.cosine(np.asarray(dense, np.float32), np.asarray(text, np.float32),
                                                         dim=0)
    logits = np.moveaxis(logits, 0, -1)  # [h, w, K]: the product's own layout
    k = logits.shape[-1]
    chunk = max(1, max_chunk_elements // (plan.input_height * plan.input_width))
    arg = best = lse = None
    for start in range(0, k, chunk):
        up = bilinear_resize(logits[..., start: start + chunk], plan.input_height, plan.input_width,
                             rows=plan.height, cols=plan.width, channels_last=True)
        value, index = _first_argmax(up)
        if arg is None:  # a pixel whose logits are NaN (or all -inf) gets class 0 and -inf
            seen = value > -np.inf
            arg, best = np.where(seen, index, 0), np.where(seen, value, np.float32(-np.inf))
        else:
            better = value > best
            arg = np.where(better, index + start, arg)
            best = np.where(better, value, best)
        up -= value[..., None]
        np.exp(up, out=up)
        part = value + np.log(up @ _ones(up.shape[-1]))
        lse = part if lse is None else np.logaddexp(lse, part)
    prob = np.exp(best - lse)
    if as_tensor:
        import torch

        return torch.from_numpy(arg), torch.from_numpy(prob)
    return arg, prob


def original_labels(labels: np.ndarray, plan: Letterbox) -> np.ndarray:
    """The ``[plan.height, plan.width]`` content label map at the original size (nearest
    neighbour, dtype kept), C-contiguous."""
    h0, w0 = plan.original_height, plan.original_width
    if labels.shape != (h0, w0):
        wide = np.take(labels, nearest_index(w0, labels.shape[1]), axis=1)
        labels = np.take(wide, nearest_index(h0, labels.shape[0]), axis=0)
    return np.ascontiguousarray(labels)


def original_scores(scores: np.ndarray, plan: Letterbox) -> np.ndarray:
    """The ``[plan.height, plan.width]`` content score map at the original size (bilinear,
    :func:`bilinear_resize`), float32 C-contiguous."""
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape != (plan.original_height, plan.original_width):
        scores = bilinear_resize(scores, plan.original_height, plan.original_width)
    return np.ascontiguousarray(scores)


@functools.lru_cache(maxsize=64)
def block_weights(n_out: int, n_in: int) -> np.ndarray:
    """``[n_in, n_in]`` float64 ``W``: row ``b`` holds, summed over the output samples whose
    nearest input sample is ``b`` (:func:`nearest_index`), their bilinear weights on each input
    sample (:func:`bilinear_taps`, the float32 weights :func:`bilinear_resize` uses).

    For an upscale (``n_out >= n_in``) of a map ``x``, ``W_rows @ x @ W_cols.T`` is then the sum
    of the bilinearly upscaled map over the block of output pixels each input pixel stands for
    under the nearest-neighbour upscale (cached per size pair, read-only).
    """
    i0, i1, w1 = bilinear_taps(n_out, n_in)
    base = nearest_index(n_out, n_in)
    out = np.zeros((n_in, n_in), dtype=np.float64)
    np.add.at(out, (base, i0), (np.float32(1.0) - w1).astype(np.float64))
    np.add.at(out, (base, i1), w1.astype(np.float64))
    return _frozen(out)[0]
