"""Similarity of features to class text embeddings: cosines, logits, probabilities, top-k, sections.

Every class score in densevlm is CLIP's zero-shot classifier (Radford et al. 2021, Fig. 3:
``logits = np.dot(I_e, T_e.T) * np.exp(t)``), which DenseVLM (arXiv 2412.06244) applies to
regions and tokens: its P-VLM retrieval and decoupled loss use ``softmax(100 * cos(region, text_k))``::

    logits[..., k] = logit_scale * sum_c feats[..., c] * text[k, c]

Features and class embeddings are unit norm (every encoder and pooling op in densevlm
normalises), so the sum is the cosine. The scalar has one name everywhere, CLIP's
``logit_scale``: the multiplier itself (``exp`` of the learned parameter, about 100 for real
CLIPs and capped there; the paper's code fixes it at 100), i.e. the inverse of a softmax
temperature. The command line still accepts ``--tau`` for it.

The thing/stuff split is vocabulary membership, never an index cut-off: ``class_is_thing``
(``[K]`` bool, :attr:`densevlm.vocab.Vocabulary.is_thing`) says which section each class is in.

    >>> from densevlm.regions import similarity
    >>> scores = similarity.logits(region_feats, text, model.logit_scale)  # [N, K]
    >>> probs = similarity.probabilities(scores)                           # [N, K], rows sum to 1
    >>> things = similarity.probabilities(scores, classes=class_is_thing)  # over the thing section only
    >>> values, indices = similarity.top_k(probs, 5)                       # [N, min(5, K)] each
    >>> region_is_thing = similarity.is_thing(indices[:, 0], class_is_thing)  # [N] bool

:func:`cosine`, :func:`logits`, :func:`probabilities` and :func:`top_k` also take numpy arrays
(and then return numpy arrays, computed in the arrays' dtype), so the runtime without PyTorch
scores exports with the same functions; reading this module imports no PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from densevlm.errors import DenseVLMError

if TYPE_CHECKING:
    import torch

__all__ = ["cosine", "logits", "restrict", "probabilities", "top_k", "is_thing"]


def cosine(feats: Any, text: Any, dim: int = -1) -> Any:
    """Cosine similarity of unit-norm features to unit-norm class embeddings.

    Args:
        feats: features with their channel axis ``C`` at ``dim``: ``[..., C]`` region features
            (``dim=-1``), or a dense map ``[C, h, w]`` (``dim=0``) / ``[B, C, h, w]`` (``dim=1``).
        text: ``[K, C]`` class embeddings, on the same device.
        dim: the channel axis of ``feats``.

    Returns:
        ``feats`` with the channel axis replaced by ``K`` scores in ``[-1, 1]`` (not
        normalised here: inputs that are not unit norm give plain dot products).

    Raises:
        DenseVLMError: the feature width differs from the embeddings' (e.g. class embeddings
            made by another model).
    """
    if text.ndim != 2 or feats.shape[dim] != text.shape[1]:
        raise DenseVLMError(
            f"features of width {feats.shape[dim]} cannot be scored against class embeddings of shape "
            f"{list(text.shape)}: embed the vocabulary with the same model"
        )
    if isinstance(feats, np.ndarray):
        if dim in (-1, feats.ndim - 1):
            return feats @ text.T
        return np.moveaxis(np.moveaxis(feats, dim, -1) @ text.T, -1, dim)
    import torch

    if dim in (-1, feats.ndim - 1):
        return feats @ text.t()
    return torch.movedim(torch.movedim(feats, dim, -1) @ text.t(), -1, dim)


def logits(feats: Any, text: Any, logit_scale: float | torch.Tensor, dim: int = -1) -> Any:
    """CLIP logits ``logit_scale * cos(feature, class)``.

    Args:
        feats, text, dim: as for :func:`cosine` (``[..., C]`` and ``[K, C]``, unit norm).
        logit_scale: the multiplier (``model.logit_scale``; a float or a scalar tensor).

    Returns:
        ``[..., K]`` (``K`` at ``dim``) logits, in units of ``logit_scale`` times a cosine. The
        features are scaled before the product, ``(s * f) @ t``, the order retrieval and
        training have always used, so recorded numbers reproduce bit for bit.
    """
    return cosine(logit_scale * feats, text, dim)


def restrict(scores: Any, classes: Any) -> Any:
    """``scores`` with every class outside ``classes`` set to ``-inf``.

    Argmax, softmax or top-k of the result pick among ``classes`` only (e.g. the best *thing*
    class of a region the teacher calls a thing).

    Args:
        scores: ``[..., K]`` logits.
        classes: ``[K]`` bool, the classes to keep (at least one True).
    """
    if isinstance(scores, np.ndarray):
        return np.where(np.asarray(classes, dtype=bool), scores, -np.inf)
    return scores.masked_fill(~classes.to(scores.device), float("-inf"))


def probabilities(scores: Any, classes: Optional[Any] = None) -> Any:
    """Softmax over the class axis (the last) of ``[..., K]`` logits.

    Args:
        scores: ``[..., K]`` logits (:func:`logits`).
        classes: ``[K]`` bool; when given, the softmax runs over these classes only and the
            others get probability 0 (:func:`restrict`).

    Returns:
        ``[..., K]`` probabilities; each row sums to 1.
    """
    if classes is not None:
        scores = restrict(scores, classes)
    if isinstance(scores, np.ndarray):
        shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    import torch.nn.functional as F

    return F.softmax(scores, dim=-1)


def top_k(scores: Any, k: int) -> tuple[Any, Any]:
    """The ``k`` best classes per row, best first (fewer when the vocabulary is smaller).

    Args:
        scores: ``[..., K]`` logits, cosines or probabilities.
        k: how many to keep (at least 1); clipped to ``K``.

    Returns:
        ``(values, indices)``, both ``[..., min(k, K)]``; for numpy arrays ties keep the lower index first.
    """
    k = min(int(k), scores.shape[-1])
    if isinstance(scores, np.ndarray):
        indices = np.argsort(-scores, axis=-1, kind="stable")[..., :k]
        return np.take_along_axis(scores, indices, axis=-1), indices
    best = scores.topk(k, dim=-1)
    return best.values, best.indices


def is_thing(labels: torch.Tensor, class_is_thing: torch.Tensor) -> torch.Tensor:
    """Whether each class index is in the vocabulary's thing section.

    Args:
        labels: class indices of any shape (e.g. ``[N]`` top-1 classes).
        class_is_thing: ``[K]`` bool, section membership per class.

    Returns:
        bool, the shape of ``labels``, on ``labels``' device: True for things, False for stuff.
    """
    return class_is_thing.to(labels.device)[labels]
