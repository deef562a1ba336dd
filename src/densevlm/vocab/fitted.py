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

    L(E) = - 1/N sum_i log p(x_i)[y_i]                                      reviewed regions
           + beta / sum_j w_j * sum_j w_j KL(q_j || p(g_j))                   the rest of their images
           + lambda / 2 * sum_{k in R} |E_k - t_k|^2                          anchor at the text

``x_i, y_i`` are the reviewed regions' RoI features and classes; ``g_j`` (weight ``w_j``) are
regions of the same images outside every reviewed box, and ``q_j`` is the model's own text-only
prediction on ``g_j`` restricted to the unreviewed classes (the expert did not put a reviewed word
there, so its probability is 0 and the rest keep their ratios). The first term is a linear probe
(logistic regression on the region feature); the third is the L2 pull towards the zero-shot text
weights of CLAP (Silva-Rodriguez et al., "A Closer Look at the Few-Shot Adaptation of Large
Vision-Language Models", CVPR 2024), which keeps an unreviewed direction where the text put it;
the second keeps the old predictions on new data by distillation, as Learning without Forgetting
(Li and Hoiem, TPAMI 2017) does. ``L`` is convex in ``E`` (a sum of log-sum-exps of linear maps
and a quadratic), so L-BFGS (scipy.optimize) from ``E = t`` finds its minimum; the gradient is
analytic::

    dL/dE_k = s/N sum_i (p_ik - [y_i = k]) x_i + s beta / sum w * sum_j (p_jk sum_l q'_jl - q'_jk) g_j
              + lambda (E_k - t_k),          q'_j = w_j q_j

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

__all__ = ["fit_embeddings", "objective", "ANCHOR", "DISTILL"]

ANCHOR = 0.1  # lambda: default pull towards the text embedding (BENCHMARKS.md, "Plant words / Stop 22")
DISTILL = 10.0  # beta: default weight of keeping the model's predictions outside the reviewed boxes


def _targets(text: np.ndarray, negatives: np.ndarray, reviewed: np.ndarray, logit_scale: float,
             weights: np.ndarray) -> np.ndarray:
    """``[M, K]`` ``w_j q_j / mean(w)``: text-only softmax over the unreviewed classes, weighted."""
    q = similarity.probabilities(similarity.logits(negatives, text, logit_scale), classes=~reviewed)
    return q * (weights / weights.mean())[:, None]


def objective(rows: np.ndarray, text: np.ndarray, feats: np.ndarray, labels: np.ndarray, negatives: np.ndarray,
              targets: np.ndarray, reviewed: np.ndarray, logit_scale: float, anchor: float, distill: float
              ) -> tuple[float, np.ndarray]:
    """``L`` and ``dL/dE`` for the reviewed rows (module docstring), as scipy's ``jac=True`` wants them.

    Args:
        rows: ``[R * C]`` the reviewed classes' rows, flattened.
        text: ``[K, C]`` text embeddings (the unreviewed rows as they stay).
        feats: ``[N, C]`` reviewed regions' features; ``labels`` ``[N]`` their class indices.
        negatives: ``[M, C]`` features of regions outside the reviewed boxes.
        targets: ``[M, K]`` their weighted targets ``q'_j`` (rows summing to ``w_j / mean(w)``).
        reviewed: ``[K]`` bool.

    Returns:
        ``(L, [R * C] gradient)``.
    """
    emb = text.copy()
    emb[reviewed] = rows.reshape(int(reviewed.sum()), text.shape[1])
    onehot = np.zeros((len(feats), len(text)))
    onehot[np.arange(len(feats)), labels] = 1.0
    log_p = log_softmax(similarity.logits(feats, emb, logit_scale), axis=1)
    log_g = log_softmax(similarity.logits(negatives, emb, logit_scale), axis=1) if len(negatives) else \
        np.zeros((0, len(text)))
    m = max(len(negatives), 1)
    diff = emb[reviewed] - text[reviewed]
    loss = (-(onehot * log_p).sum() / len(feats) - distill * (targets * log_g).sum() / m
            + 0.5 * anchor * float((diff**2).sum()))
    grad = logit_scale * (np.exp(log_p) - onehot).T @ feats / len(feats)
    if len(negatives):
        grad += distill * logit_scale * (np.exp(log_g) * targets.sum(axis=1, keepdims=True) - targets).T @ negatives / m
    return float(loss), (grad[reviewed] + anchor * diff).ravel()


def fit_embeddings(text: np.ndarray, feats: np.ndarray, labels: np.ndarray, negatives: np.ndarray,
                   reviewed: np.ndarray, logit_scale: float, anchor: float = ANCHOR, distill: float = DISTILL,
                   weights: Optional[np.ndarray] = None, max_iter: int = 500) -> np.ndarray:
    """``[K, C]`` class embeddings: the reviewed rows fitted (module docstring), the others ``text``.

    Args:
        text: ``[K, C]`` class text embeddings (unit rows).
        feats: ``[N, C]`` unit-norm RoI features of the reviewed regions (``N >= 1``).
        labels: ``[N]`` their class indices, each a ``reviewed`` class.
        negatives: ``[M, C]`` unit-norm features of regions outside every reviewed box (``M`` may be 0).
        reviewed: ``[K]`` bool, the classes with reviewed regions (the rows that are fitted).
        logit_scale: the model's multiplier of cosines (about 100).
        anchor: ``lambda`` (> 0).
        distill: ``beta`` (>= 0; 0 is a plain anchored linear probe).
        weights: ``[M]`` positive weights of the negatives (default all 1).
        max_iter: L-BFGS iterations at most.

    Raises:
        DenseVLMError: shapes disagree, a label is not a reviewed class, no class is left
            unreviewed while negatives are given, or ``anchor``/``distill``/``weights`` are out of range.
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
    if not (np.isfinite(anchor) and np.isfinite(distill) and np.isfinite(weights).all()) or anchor <= 0 or distill < 0 \
            or (weights <= 0).any():
        raise DenseVLMError(f"fit_embeddings: anchor must be finite and > 0 (got {anchor}), distill finite and >= 0 "
                            f"(got {distill}), weights finite and > 0")
    if len(negatives) and reviewed.all():
        negatives, weights = negatives[:0], weights[:0]
    targets = _targets(text, negatives, reviewed, logit_scale, weights) if len(negatives) else np.zeros((0, len(text)))
    result = minimize(objective, text[reviewed].ravel(), jac=True, method="L-BFGS-B", options={"maxiter": max_iter},
                      args=(text, feats, labels, negatives, targets, reviewed, logit_scale, anchor, distill))
    out = text.copy()
    out[reviewed] = result.x.reshape(int(reviewed.sum()), text.shape[1])
    return out.astype(np.float32)
