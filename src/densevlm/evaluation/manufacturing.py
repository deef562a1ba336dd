"""Manufacturing metrics for inspection: pure functions of scores and ground truth.

Conventions: an image is **NG** (positive, label 1) when it holds at least one defect, **OK**
(label 0) otherwise; a higher score means "more likely NG"; an image is called NG when its
score is at least the threshold. The **false-alarm rate** is the share of OK images called NG
(the false-positive rate of the ROC curve); **recall** is the share of NG images called NG.

* :func:`image_auroc` -- area under the ROC curve (scikit-learn's ``roc_auc_score``).
* :func:`false_alarm_threshold` / :func:`recall_at_false_alarm` -- the operating point that
  calls at most a given share of OK images NG, and the recall there; :func:`rank_threshold`,
  the one that calls at most a given number of them NG (:func:`allowed_at_rate`: the number a
  share allows).
* :func:`defect_confusion` -- which defect was called which.
* :func:`aupro` -- pixel-level area under the per-region-overlap curve up to 30 % false-positive
  rate, normalised to [0, 1] (Bergmann et al., "The MVTec Anomaly Detection Dataset", IJCV
  2021, section 4.2; the computation anomalib documents for its ``AUPRO`` metric).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from densevlm.errors import DenseVLMError

__all__ = ["image_auroc", "roc_points", "false_alarm_threshold", "allowed_at_rate", "rank_threshold",
           "recall_at_false_alarm", "defect_confusion", "aupro", "pro_curve"]


def _labels_scores(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise DenseVLMError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if not np.all(np.isfinite(s)):
        raise DenseVLMError("scores contain NaN or infinity")
    return y, s


def image_auroc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Image-level ROC AUC of NG (label 1) against OK (label 0); NaN when one of them is absent.

    Args:
        labels: ``[N]`` 1 for NG, 0 for OK.
        scores: ``[N]`` higher = more likely NG.
    """
    from sklearn.metrics import roc_auc_score

    y, s = _labels_scores(labels, scores)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, s))


def roc_points(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> dict[str, list[float]]:
    """The ROC curve as ``{"false_alarm": [...], "recall": [...]}`` (scikit-learn's ``roc_curve``)."""
    from sklearn.metrics import roc_curve

    y, s = _labels_scores(labels, scores)
    if y.all() or not y.any():
        return {"false_alarm": [], "recall": []}
    fpr, tpr, _ = roc_curve(y, s)
    return {"false_alarm": fpr.tolist(), "recall": tpr.tolist()}


def false_alarm_threshold(ok_scores: Sequence[float] | np.ndarray, rate: float) -> float:
    """The threshold that calls at most ``floor(rate * n)`` of the ``n`` OK scores NG
    (:func:`rank_threshold` with that many).

    Raises:
        DenseVLMError: no OK scores, or ``rate`` outside [0, 1].
    """
    return rank_threshold(ok_scores, allowed_at_rate(np.asarray(ok_scores).size, rate))


def allowed_at_rate(n: int, rate: float) -> int:
    """``floor(rate * n)``: how many of ``n`` OK images a false-alarm ``rate`` lets be called NG
    (a product that lands a hair under an integer in floating point counts as that integer).

    Raises:
        DenseVLMError: ``rate`` outside [0, 1].
    """
    if not 0.0 <= rate <= 1.0:
        raise DenseVLMError(f"false-alarm rate {rate} must be in [0, 1]")
    return int(math.floor(rate * n + 1e-9))


def rank_threshold(ok_scores: Sequence[float] | np.ndarray, allowed: int) -> float:
    """The threshold that calls at most ``allowed`` of the OK scores NG.

    With ``k = allowed`` and ``s_1 >= s_2 >= ...`` the OK scores, the threshold lies halfway
    between ``s_{k+1}`` and the next larger distinct OK score, so exactly ``k`` OK images score
    at or above it when there are no ties (fewer when ties straddle it); when ``s_{k+1}`` is the
    largest score it is the next float above it. ``k >= n`` gives ``-inf``: everything is NG.

    Raises:
        DenseVLMError: no OK scores, or ``allowed`` negative.
    """
    if allowed < 0:
        raise DenseVLMError(f"allowed false alarms must be at least 0, got {allowed}")
    s = np.sort(np.asarray(ok_scores, dtype=np.float64).ravel())[::-1]
    if s.size == 0:
        raise DenseVLMError("no OK (defect-free) images to set a false-alarm threshold on")
    if allowed >= s.size:
        return float("-inf")
    lower = s[allowed]
    above = s[s > lower]
    if above.size == 0:
        return float(np.nextafter(lower, np.inf))
    return float((lower + above.min()) / 2.0)


def recall_at_false_alarm(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
                          rate: float) -> tuple[float, float]:
    """``(recall, threshold)`` at the :func:`false_alarm_threshold` of the OK images' scores.

    Returns NaN recall when there is no NG image.
    """
    y, s = _labels_scores(labels, scores)
    threshold = false_alarm_threshold(s[~y], rate)
    recall = float((s[y] >= threshold).mean()) if y.any() else float("nan")
    return recall, threshold


def defect_confusion(true: Sequence[int], predicted: Sequence[int], n_defects: int) -> np.ndarray:
    """``[D, D + 1]`` counts: row = true defect, column = predicted defect, last column = "not a defect".

    Args:
        true: ``[M]`` true defect index (0..D-1) of each ground-truth defect region.
        predicted: ``[M]`` predicted defect index, or ``D`` (or any negative) for "not a defect".
    """
    t = np.asarray(true, dtype=np.int64).ravel()
    p = np.asarray(predicted, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise DenseVLMError(f"true ({t.size}) and predicted ({p.size}) defects differ in length")
    if t.size and (t.min() < 0 or t.max() >= n_defects):
        raise DenseVLMError(f"true defect indices must be in [0, {n_defects})")
    p = np.where((p < 0) | (p >= n_defects), n_defects, p)
    out = np.zeros((n_defects, n_defects + 1), dtype=np.int64)
    np.add.at(out, (t, p), 1)
    return out


def pro_curve(masks: np.ndarray | Sequence[np.ndarray], maps: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The per-region-overlap curve over every threshold: ``(false-positive rates, PRO)``, both ``[T + 1]``.

    At a threshold ``t`` a pixel is predicted anomalous when its map value is ``>= t``. The
    false-positive rate is the share of all ground-truth-normal pixels (of every image) predicted
    anomalous; the PRO is the mean, over every connected ground-truth region of every image
    (8-connectivity), of the share of the region predicted anomalous. The curve starts at
    ``(0, 0)`` (threshold above every value) and has one point per distinct map value.

    Args:
        masks: ``[N, H, W]`` bool ground-truth anomaly (defect) pixels, or N ``[H_i, W_i]`` arrays.
        maps: anomaly scores of the same shapes.
    """
    from scipy import ndimage

    if len(masks) != len(maps):
        raise DenseVLMError(f"{len(masks)} masks but {len(maps)} anomaly maps")
    labelled, flat_maps, flat_masks = [], [], []
    for mask, amap in zip(masks, maps):
        mask, amap = np.asarray(mask).astype(bool), np.asarray(amap, dtype=np.float64)
        if mask.shape != amap.shape or mask.ndim != 2:
            raise DenseVLMError(f"a mask {mask.shape} and its map {amap.shape} must be the same [H, W]")
        labelled.append(ndimage.label(mask, structure=np.ones((3, 3), dtype=bool)))
        flat_maps.append(amap.ravel())
        flat_masks.append(mask.ravel())
    n_regions = sum(n for _, n in labelled)
    normal = ~np.concatenate(flat_masks) if flat_masks else np.zeros(0, dtype=bool)
    if n_regions == 0 or not normal.any():
        raise DenseVLMError("AUPRO needs at least one defect pixel and one defect-free pixel")
    weights = []
    for components, n in labelled:
        sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
        per_region = np.concatenate([[0.0], 1.0 / (np.maximum(sizes, 1) * n_regions)])
        weights.append(per_region[components.ravel()])
    values = np.concatenate(flat_maps)
    order = np.argsort(-values, kind="stable")
    values = values[order]
    pro = np.cumsum(np.concatenate(weights)[order])
    fpr = np.cumsum(normal[order]) / normal.sum()
    last_of_value = np.r_[values[1:] != values[:-1], True]
    return np.r_[0.0, fpr[last_of_value]], np.r_[0.0, pro[last_of_value]]


def aupro(masks: np.ndarray, maps: np.ndarray, max_fpr: float = 0.3) -> float:
    """Area under the PRO curve for false-positive rates in ``[0, max_fpr]``, divided by ``max_fpr``.

    The curve of :func:`pro_curve` is cut at ``max_fpr`` (linearly interpolated there) and
    integrated with the trapezoidal rule; 1.0 means every region is fully found before any
    normal pixel fires. See :func:`pro_curve` for the arguments.
    """
    if not 0.0 < max_fpr <= 1.0:
        raise DenseVLMError(f"max_fpr {max_fpr} must be in (0, 1]")
    fpr, pro = pro_curve(masks, maps)
    keep = fpr <= max_fpr
    x, y = fpr[keep], pro[keep]
    if x[-1] < max_fpr:
        j = int(np.searchsorted(fpr, max_fpr, side="right"))
        x0, x1, y0, y1 = fpr[j - 1], fpr[j], pro[j - 1], pro[j]
        y_cut = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
        x, y = np.r_[x, max_fpr], np.r_[y, y_cut]
    return float(np.trapezoid(y, x) / max_fpr)
