"""Calibration: thresholds for a target false-alarm rate, with bootstrap intervals.

On labelled images (OK / NG and the defects each holds) the NG threshold is the
:func:`~densevlm.evaluation.manufacturing.false_alarm_threshold` of the OK images' NG scores:
at most ``floor(target * n_ok)`` OK images score at or above it (exactly that many without
ties). With an UNSURE band ``b``, a second, lower threshold is set the same way for the rate
``target + b``: at most that extra share of good parts is sent to a person, and everything in
between the two thresholds is UNSURE.

Intervals: 95 % percentile bootstrap (``scipy.stats.bootstrap``, seeded) of the false-alarm
rate, the recall and each defect's recall *at the chosen thresholds*, resampling images --
how much the rates measured on this set could differ on another set of the same size.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from densevlm.errors import DenseVLMError
from densevlm.evaluation.manufacturing import false_alarm_threshold

__all__ = ["bootstrap_rate", "calibrate_scores", "calibrate"]


def bootstrap_rate(hits: np.ndarray, n_resamples: int = 2000, seed: int = 0,
                   confidence: float = 0.95) -> dict[str, Any]:
    """``{"value", "ci": [low, high], "n"}`` for the share of True in ``hits`` (None when empty)."""
    from scipy.stats import bootstrap

    hits = np.asarray(hits, dtype=np.float64).ravel()
    if hits.size == 0:
        return {"value": None, "ci": [None, None], "n": 0}
    value = float(hits.mean())
    if hits.size < 2 or hits.min() == hits.max():
        return {"value": value, "ci": [value, value], "n": int(hits.size)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap((hits,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                        rng=np.random.default_rng(seed), vectorized=True)
    return {"value": value, "ci": [float(res.confidence_interval.low), float(res.confidence_interval.high)],
            "n": int(hits.size)}


def calibrate_scores(scores: np.ndarray, holds: np.ndarray, defects: Sequence[str], target: float,
                     unsure_band: Optional[float] = None, n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Thresholds and rates on a labelled score set.

    Args:
        scores: ``[N]`` NG scores.
        holds: ``[N, D]`` bool, the defects each image holds (an image is NG when any is True).
        defects: ``[D]`` defect names (for the per-defect recall keys).
        target: largest share of OK images to call NG, in [0, 1].
        unsure_band: extra share of OK images that may be UNSURE (None = no band).

    Returns:
        ``{"thresholds": {"ng", "unsure"}, "false_alarm", "recall", "recall_per_defect",
        "unsure_share_ok", "n_images", "n_ok", "n_ng"}``; rates as :func:`bootstrap_rate`.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    holds = np.asarray(holds, dtype=bool).reshape(scores.size, len(defects))
    ng = holds.any(axis=1)
    if unsure_band is not None and not 0.0 < unsure_band <= 1.0 - target:
        raise DenseVLMError(f"--unsure-band {unsure_band} must be in (0, {1.0 - target:g}] (1 - the false-alarm target)")
    t_ng = false_alarm_threshold(scores[~ng], target)
    t_unsure = false_alarm_threshold(scores[~ng], target + unsure_band) if unsure_band is not None else None
    out: dict[str, Any] = {
        "thresholds": {"ng": t_ng, "unsure": t_unsure},
        "false_alarm": bootstrap_rate(scores[~ng] >= t_ng, n_resamples, seed),
        "recall": bootstrap_rate(scores[ng] >= t_ng, n_resamples, seed),
        "recall_per_defect": {name: bootstrap_rate(scores[holds[:, j]] >= t_ng, n_resamples, seed)
                              for j, name in enumerate(defects)},
        "n_images": int(scores.size),
        "n_ok": int((~ng).sum()),
        "n_ng": int(ng.sum()),
    }
    if t_unsure is not None:
        out["unsure_share_ok"] = float(((scores[~ng] >= t_unsure) & (scores[~ng] < t_ng)).mean())
    return out


def calibrate(model: Any, images: Iterable[Any], vocab: Any, target: float, *, model_name: str, data: str,
              cfg: Any = None, unsure_band: Optional[float] = None, n_resamples: int = 2000, seed: int = 0,
              batch_size: int = 8, progress: bool = False) -> Any:
    """Score labelled images and return an :class:`~densevlm.inspection.operating_point.OperatingPoint`.

    Args:
        images: :class:`~densevlm.inspection.labelled.LabelledImage` items.
        cfg: a :class:`~densevlm.inspection.scores.ScoreConfig` (default: window scores).
        data: description of the labelled set, recorded in the operating point.
    """
    from tqdm import tqdm

    from densevlm.imaging import open_image
    from densevlm.inspection.operating_point import OperatingPoint
    from densevlm.inspection.scores import ScoreConfig, analyse_images

    images = list(images)
    cfg = (cfg or ScoreConfig()).resolved(model)
    holds = np.stack([im.holds for im in images])
    if holds.any(axis=1).all():
        raise DenseVLMError(f"{data}: every labelled image is NG; calibration needs defect-free (OK) images")
    bar = tqdm(total=len(images), desc="calibrate", unit="img", disable=None if progress else True, leave=False)
    scores = []
    for analysis in analyse_images(model, (open_image(im.path) for im in images), vocab, cfg, batch_size):
        scores.append(analysis.score)
        bar.update()
    bar.close()
    result = calibrate_scores(np.asarray(scores), holds, vocab.defects, target, unsure_band, n_resamples, seed)
    result["data"] = data
    thresholds = result.pop("thresholds")
    return OperatingPoint(model_name=model_name, model_sha256=model.backbone.weights_sha256(), vocabulary=vocab.to_text(),
                          score=cfg, ng_threshold=thresholds["ng"], unsure_threshold=thresholds["unsure"],
                          target_false_alarm=target, unsure_band=unsure_band, calibration=result)
