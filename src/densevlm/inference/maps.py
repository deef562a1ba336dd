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
"""

from __future__ import annotations

from typing import Any

import numpy as np

from densevlm.imaging import Letterbox
from densevlm.regions import similarity

__all__ = ["pixel_predictions", "original_maps", "nearest_index", "bilinear_taps", "bilinear_resize"]

# Size of the logit chunk upsampled at once (classes x input pixels): 16 M floats = 64 MB.
_MAX_CHUNK_ELEMENTS = 1 << 24


def nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """For each of ``n_out`` output pixels, the input pixel whose area holds its centre."""
    idx = ((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out)).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def bilinear_taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i0, i1, w1)`` of a bilinear resize of ``n_in`` samples to ``n_out``: output ``j`` is
    ``(1 - w1[j]) * x[i0[j]] + w1[j] * x[i1[j]]``.

    PyTorch's ``align_corners=False`` rule (``area_pixel_compute_source_index``): the source
    coordinate is ``(j + 0.5) * n_in / n_out - 0.5``, clamped at 0; ``i1`` stays on the last sample.
    """
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def bilinear_resize(array: np.ndarray, height: int, width: int, rows: int | None = None,
                    cols: int | None = None) -> np.ndarray:
    """Bilinear resize of the last two axes of ``array`` (``[..., h, w]``) to ``[..., height, width]``.

    Args:
        rows, cols: keep only the first ``rows`` (``cols``) output rows (columns), e.g. the
            letterbox content of an upsampled map, without computing the rest.

    Returns:
        float32 ``[..., rows or height, cols or width]``.
    """
    array = np.asarray(array, dtype=np.float32)
    r0, r1, rw = (t[: rows or height] for t in bilinear_taps(height, array.shape[-2]))
    c0, c1, cw = (t[: cols or width] for t in bilinear_taps(width, array.shape[-1]))
    rw = rw[:, None]
    tall = array[..., r0, :] * (1.0 - rw) + array[..., r1, :] * rw
    out = tall[..., c0]  # the products and sum of the one-line formula (same memory layout too), in place
    out *= 1.0 - cw
    right = tall[..., c1]
    right *= cw
    out += right
    return out


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
        arrays, or CPU tensors when ``dense`` is a tensor.
    """
    as_tensor = not isinstance(dense, np.ndarray)
    if as_tensor:
        dense, text = dense.detach().float().cpu().numpy(), text.detach().float().cpu().numpy()
    logits = np.float32(logit_scale) * similarity.cosine(np.asarray(dense, np.float32), np.asarray(text, np.float32),
                                                         dim=0)
    k = logits.shape[0]
    chunk = max(1, max_chunk_elements // (plan.input_height * plan.input_width))
    best = np.full((plan.height, plan.width), -np.inf, dtype=np.float32)
    arg = np.zeros((plan.height, plan.width), dtype=np.int64)
    lse = np.full((plan.height, plan.width), -np.inf, dtype=np.float32)
    for start in range(0, k, chunk):
        up = bilinear_resize(logits[start: start + chunk], plan.input_height, plan.input_width,
                             rows=plan.height, cols=plan.width)
        index = up.argmax(axis=0)
        value = np.take_along_axis(up, index[None], axis=0)[0]
        better = value > best
        arg = np.where(better, index + start, arg)
        best = np.where(better, value, best)
        lse = np.logaddexp(lse, value + np.log(np.exp(up - value).sum(axis=0)))
    prob = np.exp(best - lse)
    if as_tensor:
        import torch

        return torch.from_numpy(arg), torch.from_numpy(prob)
    return arg, prob


def original_maps(labels: np.ndarray, scores: np.ndarray, plan: Letterbox) -> tuple[np.ndarray, np.ndarray]:
    """``[plan.height, plan.width]`` content maps at the original size as numpy arrays: labels
    (dtype kept) by nearest neighbour, scores (float32) bilinear."""
    h0, w0 = plan.original_height, plan.original_width
    scores = np.asarray(scores, dtype=np.float32)
    if labels.shape != (h0, w0):
        labels = labels[nearest_index(h0, labels.shape[0])][:, nearest_index(w0, labels.shape[1])]
    if scores.shape != (h0, w0):
        scores = bilinear_resize(scores, h0, w0)
    return np.ascontiguousarray(labels), np.ascontiguousarray(scores)
