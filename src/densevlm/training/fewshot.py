"""Few-shot class embeddings from reviewed regions: ``densevlm vocab adapt`` and ``train --reviewed-embeddings``.

No gradient step: each reviewed region's RoI feature is pooled from the model's dense map
exactly as :mod:`densevlm.evaluation.regions` pools it (the image letterboxed to the model's
input size, RoI-aligned over the unit-norm dense tokens), the features of a class are averaged
into a prototype. The same images give the negatives: every token-aligned window of 1 to 4
tokens that the reviewed boxes cover less than half (:func:`negative_windows`) and, when the
text embeddings are given, the model's own regions there (:func:`own_regions`: connected
components of its text-only token argmax, object-shaped where the windows are squares).

Two ways to turn them into class embeddings (``method``):

* ``fit`` (default): :func:`densevlm.vocab.fitted.fit_embeddings` fits the reviewed classes'
  rows as a linear probe anchored at their text, keeping the model's own predictions on the
  negatives (windows weight 1, own regions :data:`OWN_REGION_WEIGHT`);
* ``blend``: :func:`densevlm.vocab.adapted.blend` mixes a prototype into the text embedding, and
  :func:`densevlm.vocab.adapted.calibrate_bias` sets each reviewed class's bias so that it takes
  at most a share of the negatives.

Seconds on a CPU for a few hundred regions. The regions are
:class:`~densevlm.regions.labelled.LabelledRegion` records, as a review database yields them.

:func:`reviewed_class_embeddings` gives fine-tuning the same embeddings, so that a word the text
tower cannot read (a plant word) is learned against a direction of its own.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch

from densevlm.errors import DenseVLMError
from densevlm.imaging import open_image
from densevlm.regions.labelled import LabelledRegion
from densevlm.regions import similarity
from densevlm.regions.pooling import roi_pool
from densevlm.vocab.adapted import (METHODS, AdaptedVocabulary, adapted, bias_direction, blend, calibrate_bias,
                                    discriminant, gap_shift)
from densevlm.vocab.fitted import ANCHOR, DISTILL, fit_embeddings
from densevlm.vocab.vocabulary import Vocabulary

__all__ = ["ReviewedFeatures", "class_prototypes", "negative_windows", "own_regions", "adapt_from_regions",
           "adapt_vocabulary", "reviewed_class_embeddings", "NEGATIVE_RATE", "OWN_REGION_WEIGHT", "METHODS"]

log = logging.getLogger(__name__)

NEGATIVE_RATE = 0.005  # blend: default share of the expert's negative regions a reviewed class may win (BENCHMARKS.md)
OWN_REGION_WEIGHT = 10.0  # fit: weight of one of the model's own regions against one window (BENCHMARKS.md)


class ReviewedFeatures(NamedTuple):
    """What the reviewed images say, in the model's feature space (:func:`class_prototypes`).

    Attributes:
        prototypes: ``[K, C]`` unit-norm mean RoI feature per class (zero rows: no examples).
        means: ``[K, C]`` the same means, not normalised.
        counts: ``[K]`` reviewed regions per class.
        image_mean: ``[C]`` mean of every unit-norm dense token of every image (not normalised).
        negatives: ``[M, C]`` unit-norm features of :func:`negative_windows` of every image.
        features: ``[N, C]`` unit-norm RoI feature of every reviewed region, in image order.
        labels: ``[N]`` their class indices.
        own: ``[P, C]`` unit-norm features of :func:`own_regions` of every image (none without
            text embeddings).
    """

    prototypes: np.ndarray
    means: np.ndarray
    counts: np.ndarray
    image_mean: np.ndarray
    negatives: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    own: np.ndarray


def _coverage(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[height, width]`` float64: 1 on the pixels of the union of ``boxes`` (XYXY, rounded), else 0."""
    covered = np.zeros((height, width), dtype=np.float64)
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
        covered[max(int(round(y1)), 0):max(int(round(y2)), 0), max(int(round(x1)), 0):max(int(round(x2)), 0)] = 1.0
    return covered


def negative_windows(boxes: np.ndarray, rows: int, cols: int, patch: int, sizes: Sequence[int] = (1, 2, 3, 4),
                     cover: float = 0.5) -> np.ndarray:
    """``[M, 4]`` XYXY input-pixel windows of a ``rows x cols`` token grid that ``boxes`` leave mostly free.

    Every square window of ``s x s`` whole tokens (``s`` in ``sizes``, up to the grid) whose area
    the union of ``boxes`` covers less than ``cover`` (a region whose majority is not a reviewed
    class: the expert did not call it one).

    Args:
        boxes: ``[N, 4]`` XYXY reviewed boxes in input pixels.
        rows, cols: the token grid of the image's content.
        patch: input pixels per token.
    """
    covered = _coverage(boxes, rows * patch, cols * patch)
    per_token = covered.reshape(rows, patch, cols, patch).mean(axis=(1, 3))
    integral = np.pad(per_token.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    out = []
    for s in sizes:
        if s > rows or s > cols:
            continue
        share = (integral[s:, s:] - integral[:-s, s:] - integral[s:, :-s] + integral[:-s, :-s]) / (s * s)
        ys, xs = np.nonzero(share < cover)
        out.append(np.stack([xs, ys, xs + s, ys + s], axis=1) * patch)
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 4), np.float32)


def own_regions(dense: np.ndarray, text: np.ndarray, boxes: np.ndarray, patch: int, cover: float = 0.5
                ) -> np.ndarray:
    """``[P, 4]`` XYXY input-pixel boxes of the model's own regions that ``boxes`` leave mostly free.

    The 8-connected components of each class in the token argmax of the cosines over ``text``
    (what the model calls each token), each as its token-aligned bounding box; a box the union of
    ``boxes`` covers ``cover`` or more of is left out (it is mostly a reviewed region).

    Args:
        dense: ``[C, h, w]`` unit-norm dense tokens of one image (content and padding alike).
        text: ``[K, C]`` embeddings of the classes that may win (at least one; pass a subset of
            the rows to leave classes out).
        boxes: ``[N, 4]`` XYXY reviewed boxes in input pixels.
        patch: input pixels per token.
    """
    from scipy import ndimage

    _, h, w = dense.shape
    winner = similarity.cosine(dense, text, dim=0).argmax(axis=0)
    covered = _coverage(boxes, h * patch, w * patch)
    out = []
    for k in np.unique(winner):
        labels, n = ndimage.label(winner == k, structure=np.ones((3, 3)))
        for rows, cols in ndimage.find_objects(labels, n):
            box = np.array([cols.start, rows.start, cols.stop, rows.stop]) * patch
            if covered[box[1]:box[3], box[0]:box[2]].mean() < cover:
                out.append(box)
    return np.array(out, np.float32).reshape(-1, 4)


def class_prototypes(model, regions: Sequence[LabelledRegion], vocab: Vocabulary, size: Optional[int] = None,
                     text: Optional[np.ndarray] = None) -> ReviewedFeatures:
    """Per-class mean of unit-norm RoI features, the mean dense token, and the negative regions' features.

    Args:
        model: a :class:`~densevlm.model.DenseModel` (``prepare``, ``encode_dense``, ``patch_size``).
        regions: labelled regions whose ``category`` is a class of ``vocab`` (any synonym).
        size: longest input side (default the model's input size).
        text: ``[K, C]`` class embeddings of ``vocab``; given, the model's own regions outside
            the reviewed boxes are pooled too (:func:`own_regions`, over every class).

    Returns:
        :class:`ReviewedFeatures`; negatives are pooled like the boxes, from the same dense maps.
    """
    size = size or model.input_size
    by_image: dict[str, list[LabelledRegion]] = {}
    for r in regions:
        by_image.setdefault(r.image_path, []).append(r)
    sums = torch.zeros(len(vocab), model.embed_dim, dtype=torch.float64)
    counts = np.zeros(len(vocab), dtype=np.int64)
    token_sum = torch.zeros(model.embed_dim, dtype=torch.float64)
    n_tokens = 0
    negatives, features, labels, own = [], [], [], []
    with torch.inference_mode():
        for path, items in by_image.items():
            image = open_image(path)
            x, plan = model.prepare(image, size=size)
            dense = model.encode_dense(x[None].to(model.device)).float()
            token_sum += dense[0].flatten(1).sum(dim=1).double().cpu()
            n_tokens += dense.shape[2] * dense.shape[3]
            boxes = plan.to_input(torch.tensor([r.box for r in items], dtype=torch.float32))
            feats = roi_pool(dense, [boxes], model.patch_size).double().cpu()
            classes = [vocab.index(r.category) for r in items]
            for f, k in zip(feats, classes):
                sums[k] += f
                counts[k] += 1
            features.append(feats.numpy())
            labels += classes
            windows = negative_windows(boxes.numpy(), dense.shape[2], dense.shape[3], model.patch_size)
            if len(windows):
                negatives.append(_pool(dense, windows, model.patch_size))
            if text is not None:
                mine = own_regions(dense[0].cpu().numpy(), text, boxes.numpy(), model.patch_size)
                if len(mine):
                    own.append(_pool(dense, mine, model.patch_size))
    protos = torch.nn.functional.normalize(sums, dim=1).numpy()
    means = (sums / torch.from_numpy(np.maximum(counts, 1)).double()[:, None]).numpy()
    empty = np.zeros((0, model.embed_dim))
    return ReviewedFeatures(protos, means, counts, (token_sum / max(n_tokens, 1)).numpy(),
                            np.concatenate(negatives) if negatives else empty, np.concatenate(features),
                            np.asarray(labels, np.int64), np.concatenate(own) if own else empty)


def _pool(dense: torch.Tensor, boxes: np.ndarray, patch: int) -> np.ndarray:
    """``[N, C]`` float64 RoI features of ``boxes`` (XYXY input pixels) on a one-image dense map."""
    return roi_pool(dense, [torch.from_numpy(boxes).to(dense.device)], patch).double().cpu().numpy()


def adapt_from_regions(model, vocab: Vocabulary, regions: Sequence[LabelledRegion], k0: float = 3.0,
                       gap: bool = True, size: Optional[int] = None, source: str = "adapted vocabulary",
                       negative_rate: Optional[float] = NEGATIVE_RATE, prototype: str = "discriminant",
                       method: str = "fit", anchor: float = ANCHOR, distill: float = DISTILL) -> AdaptedVocabulary:
    """``vocab`` plus every new class of ``regions`` (at the end of its section), with few-shot embeddings.

    Args:
        model: the model the embeddings are for (its weights' sha256 is recorded).
        vocab: the starting vocabulary (text embeddings from ``model``'s text tower).
        regions: labelled regions; a category not in ``vocab`` becomes a new class (a thing
            unless the region says ``thing=False``); regions without a category (rejected,
            unsure) are ignored.
        method: ``"fit"`` (:func:`~densevlm.vocab.fitted.fit_embeddings` with ``anchor`` and
            ``distill``; ``k0``, ``gap``, ``prototype`` and ``negative_rate`` do not apply) or
            ``"blend"`` (the rest of the arguments).
        k0: prior strength in regions (:func:`~densevlm.vocab.adapted.blend`).
        gap: move mean prototypes across the modality gap first
            (:func:`~densevlm.vocab.adapted.gap_shift`; discriminant ones have no gap).
        prototype: ``"discriminant"`` (:func:`~densevlm.vocab.adapted.discriminant` against the
            negative windows; ``"mean"`` when there are fewer than 2) or ``"mean"`` (the mean
            RoI feature).
        negative_rate: fold into each reviewed class the bias at which it wins on at most this
            share of the negative windows (:func:`~densevlm.vocab.adapted.calibrate_bias`);
            ``None``: no bias.
    """
    if prototype not in ("discriminant", "mean"):
        raise DenseVLMError(f"prototype must be 'discriminant' or 'mean', got {prototype!r}")
    if method not in METHODS:
        raise DenseVLMError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    regions = [r for r in regions if r.category is not None]
    if not regions:
        raise DenseVLMError(f"{source}: no labelled regions to learn from (confirm or correct some regions first)")
    for r in regions:
        try:
            vocab.index(r.category)
        except KeyError:
            thing = r.thing is not False
            vocab = vocab.extended(r.category, thing)
            log.info("new class '%s' (%s) from reviewed regions", r.category, "thing" if thing else "stuff")
    text = model.embed_vocabulary(vocab).float().cpu().numpy()
    sha = model.backbone.weights_sha256()
    if method == "fit":
        seen = class_prototypes(model, regions, vocab, size=size, text=text)
        negatives = np.concatenate([seen.negatives, seen.own])
        weights = np.r_[np.ones(len(seen.negatives)), np.full(len(seen.own), OWN_REGION_WEIGHT)]
        emb = fit_embeddings(text, seen.features, seen.labels, negatives, seen.counts > 0, float(model.logit_scale),
                             anchor=anchor, distill=distill, weights=weights)
        log.info("fitted %d reviewed classes on %d regions against %d windows and %d of the model's own regions",
                 int((seen.counts > 0).sum()), len(seen.features), len(seen.negatives), len(seen.own))
        return adapted(vocab, emb, sha, seen.counts, k0, source=source, method="fit", anchor=anchor, distill=distill)
    seen = class_prototypes(model, regions, vocab, size=size)
    protos, counts = seen.prototypes, seen.counts
    if prototype == "discriminant" and len(seen.negatives) < 2:
        log.warning("%s: reviewed boxes leave fewer than 2 free windows; using mean prototypes", source)
        prototype = "mean"
    if prototype == "discriminant":
        protos = discriminant(seen.means, counts, seen.negatives)
    elif gap:
        protos = np.where(counts[:, None] > 0, gap_shift(protos, seen.image_mean, text.mean(axis=0)), 0.0)
    emb = blend(text, protos, counts, k0=k0)
    bias = np.zeros(len(vocab))
    if negative_rate is not None:
        direction = bias_direction(seen.image_mean)
        bias = calibrate_bias(emb, counts > 0, seen.negatives, direction, negative_rate)
        emb = (emb + bias[:, None] * direction[None]).astype(np.float32)
        log.info("calibrated biases on %d negative windows: %s", len(seen.negatives),
                 ", ".join(f"{n} {b:+.3f}" for n, b, c in zip(vocab.names, bias, counts) if c))
    return adapted(vocab, emb, sha, counts, k0, source=source, bias=bias, negative_rate=negative_rate)


def adapt_vocabulary(model, reviewed: str | Path, vocab: Optional[Vocabulary] = None, k0: float = 3.0,
                     gap: bool = True, size: Optional[int] = None, negative_rate: Optional[float] = NEGATIVE_RATE,
                     prototype: str = "discriminant", method: str = "fit", anchor: float = ANCHOR,
                     distill: float = DISTILL) -> AdaptedVocabulary:
    """Adapt from a review database: its confirmed and corrected regions are the examples.

    Args:
        reviewed: a ``review.sqlite`` (``densevlm review init``).
        vocab: the starting vocabulary (default: the database's own, with the classes reviewers added).
    """
    from densevlm.review.reviewed import load_reviewed

    data = load_reviewed(reviewed)
    return adapt_from_regions(model, vocab or data.vocab, data.regions, k0=k0, gap=gap, size=size, source=str(reviewed),
                              negative_rate=negative_rate, prototype=prototype, method=method, anchor=anchor,
                              distill=distill)


def reviewed_class_embeddings(model, vocab: Vocabulary, regions: Sequence[LabelledRegion], k0: float = 3.0
                              ) -> torch.Tensor:
    """``[K, C]`` class embeddings for ``train --reviewed-embeddings few-shot``, in ``vocab`` order.

    The student's own few-shot embeddings (:func:`adapt_from_regions`, gap shift on) computed
    once before training, so that a reviewed class whose text the student cannot read (a plant
    word: an untrained token, nearly the same direction as every other plant word) has a
    target direction of its own in the loss. Classes no one reviewed keep their text embedding
    exactly; mean prototypes, no bias folded in (the loss's targets stay unit directions). ``model`` is put in
    eval mode for the extraction and left as it was.

    Raises:
        DenseVLMError: a reviewed category is not in ``vocab`` (a reviewed set's vocabulary
            holds every class its reviewers added).
    """
    was_training = model.training
    model.eval()
    try:
        result = adapt_from_regions(model, vocab, regions, k0=k0, negative_rate=None, prototype="mean", method="blend")
    finally:
        model.train(was_training)
    if result.names != vocab.names:
        raise DenseVLMError(f"reviewed categories {sorted(set(result.names) - set(vocab.names))} are not in the "
                            "training vocabulary")
    return torch.from_numpy(result.embeddings)
