"""Calibration: thresholds for a target false-alarm rate, with bootstrap intervals.

On labelled images (OK / NG and the defects each holds) the NG threshold is the
:func:`~densevlm.evaluation.manufacturing.rank_threshold` of the OK images' NG scores: at most
``k`` OK images score at or above it (exactly ``k`` without ties), ``k`` chosen by the rule
(:func:`allowed_false_alarms`): by default so that new OK images from the same line are called
NG at most ``target`` of the time on average (split conformal); or with a stated confidence; or
at most ``target`` of the labelled OK images. With an UNSURE band ``b``, a second, lower
threshold is set the same way for the rate ``target + b``: at most that extra share of good
parts is sent to a person, and everything in between the two thresholds is UNSURE.

Intervals: 95 % percentile bootstrap (``scipy.stats.bootstrap``, seeded) of the false-alarm
rate, the recall and each defect's recall *at the chosen thresholds*, resampling images --
how much the rates measured on this set could differ on another set of the same size (exact
Clopper-Pearson when every image agrees, where resampling cannot vary). For new
OK images, :func:`new_image_false_alarm` gives the expected rate and an upper bound at a confidence.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from densevlm.errors import DenseVLMError
from densevlm.evaluation.manufacturing import allowed_at_rate, rank_threshold

__all__ = ["RULES", "allowed_false_alarms", "check_enough_ok", "new_image_false_alarm", "bootstrap_rate",
           "calibrate_scores", "calibrate"]

RULES = ("expected", "confident", "labelled")


def allowed_false_alarms(n_ok: int, rate: float, rule: str = "expected", confidence: float = 0.9) -> int:
    """How many of ``n_ok`` labelled OK images may score at or above the NG threshold (``k``).

    The threshold then lies just above the ``(k+1)``-th highest OK score. When the labelled OK
    images and new ones come from the same line (exchangeable, continuous scores), the share of
    new OK images scoring above it is ``Beta(k + 1, n - k)``-distributed over labelled sets: the
    ``(k+1)``-th smallest of ``n`` uniforms; mean ``(k + 1) / (n + 1)``.

    * ``expected`` (split conformal prediction; Angelopoulos & Bates, "A Gentle Introduction to
      Conformal Prediction", 2021, section 1): the largest ``k`` with ``(k + 1) / (n + 1) <= rate``,
      so new OK images are called NG at most ``rate`` of the time on average.
    * ``confident`` (training-conditional validity; Vovk, "Conditional validity of inductive
      conformal predictors", 2012): the largest ``k`` with ``P(Binomial(n, rate) <= k) <= 1 -
      confidence`` (= ``P(Beta(k + 1, n - k) > rate)``), so the rate on new OK images is at most
      ``rate`` with probability ``confidence`` over labelled sets.
    * ``labelled``: ``k = floor(rate * n)``, at most ``rate`` of the labelled OK images; on new
      ones the rate is then ``(k + 1) / (n + 1)`` on average, up to ``1 / n`` above ``rate``.

    Returns:
        ``k`` in ``0 .. n_ok``, or -1 when ``n_ok`` images cannot promise ``rate`` by this rule
        (``expected``: fewer than ``1 / rate - 1`` of them).

    Raises:
        DenseVLMError: an unknown rule, ``rate`` or ``confidence`` outside [0, 1], or no OK image.
    """
    if rule not in RULES:
        raise DenseVLMError(f"calibration rule {rule!r} is not one of {', '.join(RULES)}")
    if not 0.0 <= rate <= 1.0:
        raise DenseVLMError(f"false-alarm rate {rate} must be in [0, 1]")
    if not 0.0 < confidence < 1.0:
        raise DenseVLMError(f"confidence {confidence} must be between 0 and 1")
    if n_ok < 1:
        raise DenseVLMError("no OK (defect-free) images to set a false-alarm threshold on")
    if rule == "labelled":
        return allowed_at_rate(n_ok, rate)
    if rule == "expected":
        return allowed_at_rate(n_ok + 1, rate) - 1
    from scipy.stats import binom

    cdf = binom.cdf(np.arange(n_ok + 1), n_ok, rate)
    return int(np.searchsorted(cdf, 1.0 - confidence + 1e-12, side="right")) - 1


def check_enough_ok(n_ok: int, rate: float, rule: str, confidence: float = 0.9, where: str = "") -> int:
    """:func:`allowed_false_alarms`, refusing (one line, prefixed with ``where``) a labelled set
    whose ``n_ok`` OK images cannot promise ``rate`` by ``rule``, saying how many it takes."""
    allowed = allowed_false_alarms(n_ok, rate, rule, confidence)
    if allowed >= 0:
        return allowed
    prefix = f"{where}: " if where else ""
    if rate <= 0.0:
        raise DenseVLMError(f"{prefix}no number of OK images promises a false-alarm rate of 0 on new images; "
                            "use a rate above 0 (--rule labelled holds 0 on the labelled images only)")
    if rule == "expected":
        needed = math.ceil(1.0 / rate - 1.0 - 1e-9)
    else:  # confident: k = 0 needs (1 - rate)^n <= 1 - confidence
        needed = math.ceil(math.log(1.0 - confidence) / math.log1p(-rate) - 1e-9)
    raise DenseVLMError(f"{prefix}{n_ok} OK (defect-free) images cannot hold a {rate:g} false-alarm rate on new "
                        f"images by rule {rule!r}; it takes at least {needed} (--rule labelled holds it on the "
                        "labelled images only)")


def new_image_false_alarm(n_ok: int, allowed: int, confidence: float = 0.9) -> dict[str, float]:
    """``{"expected", "upper", "confidence"}``: bounds on the false-alarm rate on new OK images of
    a threshold that ``allowed`` (``k``) of ``n_ok`` labelled OK images reach: its average over
    labelled sets is at most ``(k + 1) / (n + 1)``, and it is at most the ``confidence`` quantile
    of ``Beta(k + 1, n - k)`` with that probability (:func:`allowed_false_alarms`; exact for a
    threshold at the ``(k+1)``-th highest OK score, and the threshold lies above it)."""
    from scipy.stats import beta

    if allowed >= n_ok:
        return {"expected": 1.0, "upper": 1.0, "confidence": confidence}
    return {"expected": (allowed + 1) / (n_ok + 1),
            "upper": float(beta.ppf(confidence, allowed + 1, n_ok - allowed)), "confidence": confidence}


def bootstrap_rate(hits: np.ndarray, n_resamples: int = 2000, seed: int = 0,
                   confidence: float = 0.95) -> dict[str, Any]:
    """``{"value", "ci": [low, high], "n"}`` for the share of True in ``hits`` (None when empty).

    When every hit is the same (0 of n or n of n) every resample is too, and the percentile
    bootstrap would claim ``[0, 0]``; the interval is then the exact Clopper-Pearson one
    (``scipy.stats.binomtest``): 0 of 75 is ``[0, 4.8 %]``, not certainty.
    """
    from scipy.stats import binomtest, bootstrap

    hits = np.asarray(hits, dtype=np.float64).ravel()
    if hits.size == 0:
        return {"value": None, "ci": [None, None], "n": 0}
    value = float(hits.mean())
    if hits.min() == hits.max():
        ci = binomtest(int(hits.sum()), int(hits.size)).proportion_ci(confidence, method="exact")
        return {"value": value, "ci": [float(ci.low), float(ci.high)], "n": int(hits.size)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap((hits,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                        rng=np.random.default_rng(seed), vectorized=True)
    return {"value": value, "ci": [float(res.confidence_interval.low), float(res.confidence_interval.high)],
            "n": int(hits.size)}


def calibrate_scores(scores: np.ndarray, holds: np.ndarray, defects: Sequence[str], target: float,
                     unsure_band: Optional[float] = None, n_resamples: int = 2000, seed: int = 0,
                     rule: str = "expected", confidence: float = 0.9) -> dict[str, Any]:
    """Thresholds and rates on a labelled score set.

    Args:
        scores: ``[N]`` NG scores.
        holds: ``[N, D]`` bool, the defects each image holds (an image is NG when any is True).
        defects: ``[D]`` defect names (for the per-defect recall keys).
        target: largest share of OK images to call NG, in [0, 1], in the sense of ``rule``.
        unsure_band: extra share of OK images that may be UNSURE (None = no band).
        rule, confidence: how ``target`` is held (:func:`allowed_false_alarms`).

    Returns:
        ``{"thresholds": {"ng", "unsure"}, "rule", "allowed_false_alarms", "false_alarm",
        "false_alarm_new_images", "recall", "recall_per_defect", "unsure_share_ok", "n_images",
        "n_ok", "n_ng"}``; rates on this set as :func:`bootstrap_rate`, on new images as
        :func:`new_image_false_alarm`.

    Raises:
        DenseVLMError: a bad band or rule, or too few OK images to promise ``target`` by ``rule``.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    holds = np.asarray(holds, dtype=bool).reshape(scores.size, len(defects))
    ng = holds.any(axis=1)
    if unsure_band is not None and not 0.0 < unsure_band <= 1.0 - target:
        raise DenseVLMError(f"--unsure-band {unsure_band} must be in (0, {1.0 - target:g}] (1 - the false-alarm target)")
    n_ok = int((~ng).sum())
    allowed = check_enough_ok(n_ok, target, rule, confidence)
    t_ng = rank_threshold(scores[~ng], allowed)
    t_unsure = None
    if unsure_band is not None:
        t_unsure = rank_threshold(scores[~ng], max(allowed, allowed_false_alarms(n_ok, target + unsure_band, rule,
                                                                                  confidence)))
    out: dict[str, Any] = {
        "thresholds": {"ng": t_ng, "unsure": t_unsure},
        "rule": rule,
        "allowed_false_alarms": allowed,
        "false_alarm": bootstrap_rate(scores[~ng] >= t_ng, n_resamples, seed),
        "false_alarm_new_images": new_image_false_alarm(n_ok, allowed, confidence),
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
              batch_size: int = 8, progress: bool = False, rule: str = "expected", confidence: float = 0.9) -> Any:
    """Score labelled images and return an :class:`~densevlm.inspection.operating_point.OperatingPoint`.

    Args:
        images: :class:`~densevlm.inspection.labelled.LabelledImage` items.
        cfg: a :class:`~densevlm.inspection.scores.ScoreConfig` (default: window scores).
        data: description of the labelled set, recorded in the operating point.
        rule, confidence: how ``target`` is held (:func:`allowed_false_alarms`).
    """
    from tqdm import tqdm

    from densevlm.inspection.operating_point import OperatingPoint
    from densevlm.inspection.scores import ScoreConfig, analyse_images, readable_images

    images = list(images)
    cfg = (cfg or ScoreConfig()).resolved(model)
    holds = np.stack([im.holds for im in images])

    def check(holds: np.ndarray) -> None:
        if holds.any(axis=1).all():
            raise DenseVLMError(f"{data}: every labelled image is NG; calibration needs defect-free (OK) images")
        check_enough_ok(int((~holds.any(axis=1)).sum()), target, rule, confidence, where=data)

    check(holds)
    bar = tqdm(total=len(images), desc="calibrate", unit="img", disable=None if progress else True, leave=False)
    scores, errors = [], {}
    for analysis in analyse_images(model, readable_images([im.path for im in images], cfg.size, errors), vocab, cfg,
                                   batch_size):
        scores.append(analysis.score)
        bar.update()
    bar.close()
    if errors:  # unreadable or too small: calibrated on the others (each named in a warning)
        holds = holds[[i for i in range(len(images)) if i not in errors]]
        check(holds)
    result = calibrate_scores(np.asarray(scores), holds, vocab.defects, target, unsure_band, n_resamples, seed,
                              rule=rule, confidence=confidence)
    result["data"] = data
    result["n_skipped"] = len(errors)
    thresholds = result.pop("thresholds")
    return OperatingPoint(model_name=model_name, model_sha256=model.backbone.weights_sha256(), vocabulary=vocab.to_text(),
                          score=cfg, ng_threshold=thresholds["ng"], unsure_threshold=thresholds["unsure"],
                          target_false_alarm=target, unsure_band=unsure_band, calibration=result)
