"""Few-shot class embeddings from reviewed regions: ``densevlm vocab adapt`` and ``train --reviewed-embeddings``.

No gradient step: each reviewed region's RoI feature is pooled from the model's dense map
exactly as :mod:`densevlm.evaluation.regions` pools it (the image letterboxed to the model's
input size, RoI-aligned over the unit-norm dense tokens), the features of a class are averaged
into a prototype, and :func:`densevlm.vocab.adapted.blend` mixes it into the class's text
embedding. Seconds on a CPU for a few hundred regions. The regions are
:class:`~densevlm.regions.labelled.LabelledRegion` records, as a review database yields them.

:func:`reviewed_class_embeddings` gives fine-tuning the same embeddings, so that a word the text
tower cannot read (a plant word) is learned against a direction of its own.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from densevlm.errors import DenseVLMError
from densevlm.imaging import open_image
from densevlm.regions.labelled import LabelledRegion
from densevlm.regions.pooling import roi_pool
from densevlm.vocab.adapted import AdaptedVocabulary, adapted, blend, gap_shift
from densevlm.vocab.vocabulary import Vocabulary

__all__ = ["class_prototypes", "adapt_from_regions", "adapt_vocabulary", "reviewed_class_embeddings"]

log = logging.getLogger(__name__)


def class_prototypes(model, regions: Sequence[LabelledRegion], vocab: Vocabulary, size: Optional[int] = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class mean of unit-norm RoI features, and the mean dense token of the images seen.

    Args:
        model: a :class:`~densevlm.model.DenseModel` (``prepare``, ``encode_dense``, ``patch_size``).
        regions: labelled regions whose ``category`` is a class of ``vocab`` (any synonym).
        size: longest input side (default the model's input size).

    Returns:
        ``(prototypes [K, C], counts [K], image_mean [C])``: prototypes are unit-norm means
        (zero rows for classes without examples), ``image_mean`` the mean over every unit-norm
        dense token of every image (not normalised).
    """
    size = size or model.input_size
    by_image: dict[str, list[LabelledRegion]] = {}
    for r in regions:
        by_image.setdefault(r.image_path, []).append(r)
    sums = torch.zeros(len(vocab), model.embed_dim, dtype=torch.float64)
    counts = np.zeros(len(vocab), dtype=np.int64)
    token_sum = torch.zeros(model.embed_dim, dtype=torch.float64)
    n_tokens = 0
    with torch.inference_mode():
        for path, items in by_image.items():
            image = open_image(path)
            x, plan = model.prepare(image, size=size)
            dense = model.encode_dense(x[None].to(model.device)).float()
            token_sum += dense[0].flatten(1).sum(dim=1).double().cpu()
            n_tokens += dense.shape[2] * dense.shape[3]
            boxes = plan.to_input(torch.tensor([r.box for r in items], dtype=torch.float32))
            feats = roi_pool(dense, [boxes], model.patch_size).double().cpu()
            labels = [vocab.index(r.category) for r in items]
            for f, k in zip(feats, labels):
                sums[k] += f
                counts[k] += 1
    protos = torch.nn.functional.normalize(sums, dim=1).numpy()
    return protos, counts, (token_sum / max(n_tokens, 1)).numpy()


def adapt_from_regions(model, vocab: Vocabulary, regions: Sequence[LabelledRegion], k0: float = 3.0,
                       gap: bool = True, size: Optional[int] = None, source: str = "adapted vocabulary"
                       ) -> AdaptedVocabulary:
    """``vocab`` plus every new class of ``regions`` (at the end of its section), with blended embeddings.

    Args:
        model: the model the embeddings are for (its weights' sha256 is recorded).
        vocab: the starting vocabulary (text embeddings from ``model``'s text tower).
        regions: labelled regions; a category not in ``vocab`` becomes a new class (a thing
            unless the region says ``thing=False``); regions without a category (rejected,
            unsure) are ignored.
        k0: prior strength in regions (:func:`~densevlm.vocab.adapted.blend`).
        gap: move prototypes across the modality gap first (:func:`~densevlm.vocab.adapted.gap_shift`).
    """
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
    protos, counts, image_mean = class_prototypes(model, regions, vocab, size=size)
    if gap:
        protos = np.where(counts[:, None] > 0, gap_shift(protos, image_mean, text.mean(axis=0)), 0.0)
    emb = blend(text, protos, counts, k0=k0)
    return adapted(vocab, emb, model.backbone.weights_sha256(), counts, k0, source=source)


def adapt_vocabulary(model, reviewed: str | Path, vocab: Optional[Vocabulary] = None, k0: float = 3.0,
                     gap: bool = True, size: Optional[int] = None) -> AdaptedVocabulary:
    """Adapt from a review database: its confirmed and corrected regions are the examples.

    Args:
        reviewed: a ``review.sqlite`` (``densevlm review init``).
        vocab: the starting vocabulary (default: the database's own, with the classes reviewers added).
    """
    from densevlm.review.reviewed import load_reviewed

    data = load_reviewed(reviewed)
    return adapt_from_regions(model, vocab or data.vocab, data.regions, k0=k0, gap=gap, size=size, source=str(reviewed))


def reviewed_class_embeddings(model, vocab: Vocabulary, regions: Sequence[LabelledRegion], k0: float = 3.0
                              ) -> torch.Tensor:
    """``[K, C]`` class embeddings for ``train --reviewed-embeddings few-shot``, in ``vocab`` order.

    The student's own few-shot embeddings (:func:`adapt_from_regions`, gap shift on) computed
    once before training, so that a reviewed class whose text the student cannot read (a plant
    word: an untrained token, nearly the same direction as every other plant word) has a
    target direction of its own in the loss. Classes no one reviewed keep their text embedding
    exactly. ``model`` is put in eval mode for the extraction and left as it was.

    Raises:
        DenseVLMError: a reviewed category is not in ``vocab`` (a reviewed set's vocabulary
            holds every class its reviewers added).
    """
    was_training = model.training
    model.eval()
    try:
        result = adapt_from_regions(model, vocab, regions, k0=k0)
    finally:
        model.train(was_training)
    if result.names != vocab.names:
        raise DenseVLMError(f"reviewed categories {sorted(set(result.names) - set(vocab.names))} are not in the "
                            "training vocabulary")
    return torch.from_numpy(result.embeddings)
