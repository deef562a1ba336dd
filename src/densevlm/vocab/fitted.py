"""Few-shot class embeddings fitted as a text-anchored linear probe (``vocab adapt --method fit``, the default).

A blended prototype (:mod:`densevlm.vocab.adapted`) is one direction per class, set without
looking at the other classes: a new word's direction wins wherever it is the closest, and with
ten examples that is often a known part or defect next to it in feature space. Fitting the
reviewed classes' rows against the other classes fixes that: the rows are chosen so that the
model's own softmax names the reviewed regions, and leaves every other region to the classes it
already gave it.

Objective over the rows ``E_k`` of the reviewed classes ``k in R`` (the other rows stay their
text embeddings ``t_k``, so a class no one reviewed is scored exactly as before), with ``s`` the
model's ``logit_scale`` and ``p(f) = softmax(s * E f)``::

    L(E) = - 1/|C| sum_{c in C} 1/n_c sum_{i: y_i = c} log p(x_i)[c]             reviewed regions
           + 1 / sum_j w_j * sum_j w_j b_j KL(q_j || p(g_j))                     the rest of their images
           + lambda / 2 * sum_{k in R} |E_k - t_k|^2                              anchor at the text

``x_i, y_i`` are the reviewed regions' RoI features and classes, ``C`` the classes among them and
``n_c`` their regions: each class weighs the same, so thirty confirmed nuts do not outweigh ten
rivets. ``g_j`` (weight ``w_j``) are regions of the same images outside every reviewed box, and
``q_j`` is the model's own text-only prediction on ``g_j`` over every class except the words it
cannot read: the reviewed classes whose reviewed regions the text-only model names less than
``READABLE`` of the time (a plant word's untrained token; the expert did not put one there, so its
probability is 0 and the rest keep their ratios). ``b_j = beta m_j + beta_L (1 - m_j)``, with
``m_j`` the share of ``q_j`` on classes without reviewed regions: distillation stands in for the
expert's labels where there are none (``beta``, the ``distill`` weight) and only regularises where
the expert labelled the class the model predicts (``beta_L = DISTILL_LABELLED``). So an expert who
labels only the new words gets the strong distillation that keeps the known classes' regions, and
one who also confirms regions of the known classes (every class reviewed) gets their labels
instead of the model's guesses, without switching the distillation off.

The first term is a class-balanced linear probe (logistic regression on the region feature); the
third is the L2 pull towards the zero-shot text weights of CLAP (Silva-Rodriguez et al., "A Closer
Look at the Few-Shot Adaptation of Large Vision-Language Models", CVPR 2024), which keeps an
unreviewed direction where the text put it; the second keeps the old predictions on new data by
distillation, as Learning without Forgetting (Li and Hoiem, TPAMI 2017) does. ``L`` is convex in
``E`` (a sum of log-sum-exps of linear maps and a quadratic), so L-BFGS (scipy.optimize) from
``E = t`` finds its minimum; the gradient is analytic, with ``v_i = 1 / (|C| n_{y_i})`` and
``q'_j = w_j b_j q_j / mean(w)``, ``M`` negatives::

    dL/dE_k = s sum_i v_i (p_ik - [y_i = k]) x_i + s/M sum_j (p_jk sum_l q'_jl - q'_jk) g_j
              + lambda (E_k - t_k)

Rows come out of any norm: a row's length acts as a per-class logit scale and bias (every unit-norm
dense feature of these models lies in a narrow cone, so ``<f, E_k>`` has a near-constant part),
and the table stays a plain ``[K, C]`` matrix that segment, eval, inspect and export use unchanged.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from densevlm.errors import DenseVLMError
from densevlm.regions import similarity

__all__ = ["fit_embeddings", "objective", "unreadable", "ANCHOR", "DISTILL", "DISTILL_LABELLED", "READABLE"]

ANCHOR = 0.03  # lambda: default pull towards the text embedding (BENCHMARKS.md, "Plant words / Stop 23")
DISTILL = 10.0  # beta: default weight of keeping the model's predictions outside the reviewed boxes
DISTILL_LABELLED = 0.1  # beta_L: the same where the model predicts a class the expert labelled (Stop 23)
READABLE = 0.25  # a reviewed class named on fewer of its reviewed regions by the text is a word the model cannot read


def unreadable(text: np.ndarray, feats: np.ndarray, labels: np.ndarray, logit_scale: float) -> np.ndarray:
    """``[K]`` bool: the labelled classes that the text-only model names on fewer than ``READABLE``
    of their regions (``feats`` ``[N, C]``, ``labels`` ``[N]``): words it cannot read."""
    named = similarity.logits(feats, text, logit_scale).argmax(axis=1)
    out = np.zeros(len(text), bool)
    for k in np.unique(labels):
        out[k] = float(np.mean(named[labels == k] == k)) < READABLE
    return out


def _targets(text: np.ndarray, negatives: np.ndarray, reviewed: np.ndarray, cannot_read: np.ndarray,
             logit_scale: float, weights: np.ndarray, distill: float, distill_labelled: float) -> np.ndarray:
    """``[M, K]`` ``q'_j = w_j b_j q_j / mean(w)`` (module docstring): the text-only softmax over the
    classes the model can read, weighted by where its mass lies (unreviewed classes: ``distill``)."""
    q = similarity.probabilities(similarity.logits(negatives, text, logit_scale), classes=~cannot_read)
    unlabelled = q[:, ~reviewed].sum(axis=1)
    b = distill * unlabelled + distill_labelled * (1.0 - unlabelled)
    return q * (weights * b / weights.mean())[:, None]


def objective(rows: np.ndarray, text: np.ndarray, feats: np.ndarray, labels: np.ndarray, negatives: np.ndarray,
              targets: np.ndarray, reviewed: np.ndarray, logit_scale: float, anchor: float
              ) -> tuple[float, np.ndarray]:
    """``L`` and ``dL/dE`` for the reviewed rows (module docstring), as scipy's ``jac=True`` wants them.

    Args:
        rows: ``[R * C]`` the reviewed classes' rows, flattened.
        text: ``[K, C]`` text embeddings (the unreviewed rows as they stay).
        feats: ``[N, C]`` reviewed regions' features; ``labels`` ``[N]`` their class indices.
        negatives: ``[M, C]`` features of regions outside the reviewed boxes.
        targets: ``[M, K]`` their weighted targets ``q'_j`` (:func:`_targets`; rows summing to
            ``w_j b_j / mean(w)``).
        reviewed: ``[K]`` bool.

    Returns:
        ``(L, [R * C] gradient)``.
    """
    emb = text.copy()
    emb[reviewed] = rows.reshape(int(reviewed.sum()), text.shape[1])
    onehot = np.zeros((len(feats), len(text)))
    onehot[np.arange(len(feats)), labels] = 1.0
    counts = np.bincount(labels, minlength=len(text))
    v = 1.0 / (counts[labels] * np.count_nonzero(counts))
    log_p = log_softmax(similarity.logits(feats, emb, logit_scale), axis=1)
    log_g = log_softmax(similarity.logits(negatives, emb, logit_scale), axis=1) if len(negatives) else \
        np.zeros((0, len(text)))
    m = max(len(negatives), 1)
    diff = emb[reviewed] - text[reviewed]
    loss = -(v[:, None] * onehot * log_p).sum() - (targets * log_g).sum() / m + 0.5 * anchor * float((diff**2).sum())
    grad = logit_scale * (v[:, None] * (np.exp(log_p) - onehot)).T @ feats
    if len(negatives):
        grad += logit_scale * (np.exp(log_g) * targets.sum(axis=1, keepdims=True) - targets).T @ negatives / m
    return float(loss), (grad[reviewed] + anchor * diff).ravel()


def fit_embeddings(text: np.ndarray, feats: np.ndarray, labels: np.ndarray, negatives: np.ndarray,
                   reviewed: np.ndarray, logit_scale: float, anchor: float = ANCHOR, distill: float = DISTILL,
                   weights: Optional[np.ndarray] = None, distill_labelled: float = DISTILL_LABELLED,
                   max_iter: int = 500) -> np.ndarray:
    """``[K, C]`` class embeddings: the reviewed rows fitted (module docstring), the others ``text``.

    Args:
        text: ``[K, C]`` class text embeddings (unit rows).
        feats: ``[N, C]`` unit-norm RoI features of the reviewed regions (``N >= 1``).
        labels: ``[N]`` their class indices, each a ``reviewed`` class.
        negatives: ``[M, C]`` unit-norm features of regions outside every reviewed box (``M`` may be 0).
        reviewed: ``[K]`` bool, the classes with reviewed regions (the rows that are fitted).
        logit_scale: the model's multiplier of cosines (about 100).
        anchor: ``lambda`` (> 0).
        distill: ``beta`` (>= 0; 0 with ``distill_labelled`` 0 is a plain anchored linear probe).
        weights: ``[M]`` positive weights of the negatives (default all 1).
        distill_labelled: ``beta_L`` (>= 0), the distillation weight where the model predicts a
            class the expert labelled.
        max_iter: L-BFGS iterations at most.

    Raises:
        DenseVLMError: shapes disagree, a label is not a reviewed class, or
            ``anchor``/``distill``/``distill_labelled``/``weights`` are out of range. (When no class is
            left that the model can read, the negatives are dropped: there is no prediction to keep.)
    """
    text = np.asarray(text, np.float64)
    feats, negatives = np.asarray(feats, np.float64), np.asarray(negatives, np.float64).reshape(-1, text.shape[1])
    labels, reviewed = np.asarray(labels, np.int64), np.asarray(reviewed, bool)
    weights = np.ones(len(negatives)) if weights is None else np.asarray(weights, np.float64)
    if text.ndim != 2 or feats.ndim != 2 or feats.shape[1] != text.shape[1] or len(feats) != len(labels) \
            or reviewed.shape != (len(text),) or weights.shape != (len(negatives),) or not len(feats):
        raise DenseVLMError(f"fit_embeddings: text {text.shape}, feats {feats.shape}, labels {labels.shape}, "
                            f"negatives {negatives.shape}, reviewed {reviewed.shape} and weights {weights.shape} "
                            "do not match ([K, C], [N, C], [N], [M, C], [K], [M]; N >= 1)")
    if labels.min() < 0 or labels.max() >= len(text) or not reviewed[labels].all():
        raise DenseVLMError("fit_embeddings: every label must be a reviewed class")
    if not (np.isfinite(anchor) and np.isfinite(distill) and np.isfinite(distill_labelled)
            and np.isfinite(weights).all()) or anchor <= 0 or distill < 0 or distill_labelled < 0 or (weights <= 0).any():
        raise DenseVLMError(f"fit_embeddings: anchor must be finite and > 0 (got {anchor}), distill and "
                            f"distill_labelled finite and >= 0 (got {distill}, {distill_labelled}), weights finite and > 0")
    cannot_read = unreadable(text, feats, labels, logit_scale)
    if len(negatives) and cannot_read.all():
        negatives, weights = negatives[:0], weights[:0]
    targets = _targets(text, negatives, reviewed, cannot_read, logit_scale, weights, distill, distill_labelled) \
        if len(negatives) else np.zeros((0, len(text)))
    result = minimize(objective, text[reviewed].ravel(), jac=True, method="L-BFGS-B", options={"maxiter": max_iter},
                      args=(text, feats, labels, negatives, targets, reviewed, logit_scale, anchor))
    out = text.copy()
    out[reviewed] = result.x.reshape(int(reviewed.sum()), text.shape[1])
    return out.astype(np.float32)
