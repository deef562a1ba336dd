"""Pixel maps of one image: the class and its probability per original pixel.

The dense map ``[C, h, w]`` (unit norm per token) is scored against the class embeddings
``[K, C]``; the ``[K, h, w]`` logits are bilinearly upsampled to the model input (in chunks of
classes, so the ``[K, H, W]`` stack never exists at once) where the argmax and the softmax
probability of the winner (:mod:`densevlm.regions.similarity`) are taken. The letterbox is then
undone: the content area is cropped and the label map (nearest) and the score map (bilinear)
are resized to the original image size. The ``K``-channel logits are never resized to the
original size, so a 6000x4000 photo costs a few hundred MB, not ``K`` times that.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from densevlm.imaging import Letterbox
from densevlm.regions import similarity

__all__ = ["pixel_predictions", "original_maps", "nearest_index"]

# Size of the logit chunk upsampled at once (classes x input pixels): 16 M floats = 64 MB.
_MAX_CHUNK_ELEMENTS = 1 << 24


def nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """For each of ``n_out`` output pixels, the input pixel whose area holds its centre."""
    idx = ((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out)).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def pixel_predictions(dense: torch.Tensor, text: torch.Tensor, logit_scale: float, plan: Letterbox,
                      max_chunk_elements: int = _MAX_CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax class and its softmax probability per input pixel, cropped to the letterbox content.

    Args:
        dense: ``[C, h, w]`` dense map of one image (``h * p`` = input height).
        text: ``[K, C]`` class embeddings.
        logit_scale: ``model.logit_scale``.
        plan: the image's letterbox.

    Returns:
        ``([plan.height, plan.width] int64 labels, same-shape float32 probabilities)``.
    """
    logits = logit_scale * similarity.cosine(dense, text, dim=0)  # scaled after the product, as maps always were
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


def original_maps(labels: np.ndarray, scores: torch.Tensor, plan: Letterbox) -> tuple[np.ndarray, np.ndarray]:
    """``[plan.height, plan.width]`` content maps at the original size as numpy arrays: labels
    (dtype kept) by nearest neighbour, scores (float32) bilinear."""
    h0, w0 = plan.original_height, plan.original_width
    if labels.shape != (h0, w0):
        labels = labels[nearest_index(h0, labels.shape[0])][:, nearest_index(w0, labels.shape[1])]
    if scores.shape != (h0, w0):
        scores = F.interpolate(scores[None, None].float(), size=(h0, w0), mode="bilinear", align_corners=False)[0, 0]
    return np.ascontiguousarray(labels), scores.float().cpu().numpy()

