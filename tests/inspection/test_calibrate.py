"""Calibration on synthetic score sets: the target false-alarm rate is hit exactly (on the labelled
set, or on average / with the stated confidence on new images drawn from the same distribution)."""

from __future__ import annotations

import numpy as np
import pytest

from densevlm.errors import DenseVLMError
from densevlm.evaluation.manufacturing import rank_threshold
from densevlm.inspection.calibrate import (allowed_false_alarms, bootstrap_rate, calibrate_scores, check_enough_ok,
                                           new_image_false_alarm)


def _scores(n_ok: int, n_ng: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.normal(0.3, 0.1, n_ok), rng.normal(0.7, 0.15, n_ng)]
    holds = np.zeros((n_ok + n_ng, 2), dtype=bool)
    holds[n_ok:, 0] = rng.random(n_ng) < 0.5
    holds[n_ok:, 1] = ~holds[n_ok:, 0]
    return scores, holds


@pytest.mark.parametrize("target", [0.01, 0.02, 0.05, 0.1])
def test_calibration_hits_the_target_exactly(target):
    scores, holds = _scores(1000, 400)
    out = calibrate_scores(scores, holds, ["scratch", "dent"], target, n_resamples=200, rule="labelled")
    ok = scores[:1000]
    assert out["false_alarm"]["value"] == pytest.approx(target)
    assert (ok >= out["thresholds"]["ng"]).sum() == round(target * 1000)
    recall = (scores[1000:] >= out["thresholds"]["ng"]).mean()
    assert out["recall"]["value"] == pytest.approx(recall)
    lo, hi = out["false_alarm"]["ci"]
    assert lo <= target <= hi and hi - lo > 0
    per = out["recall_per_defect"]
    assert per["scratch"]["n"] + per["dent"]["n"] == 400
    assert out["n_ok"] == 1000 and out["n_ng"] == 400


def test_unsure_band_sends_the_extra_share_to_a_person():
    scores, holds = _scores(1000, 300, seed=3)
    out = calibrate_scores(scores, holds, ["a", "b"], 0.02, unsure_band=0.05, n_resamples=200, rule="labelled")
    t = out["thresholds"]
    assert t["unsure"] < t["ng"]
    ok = scores[:1000]
    assert ((ok >= t["unsure"]) & (ok < t["ng"])).sum() == 50
    assert out["unsure_share_ok"] == pytest.approx(0.05)
    with pytest.raises(DenseVLMError, match="--unsure-band"):
        calibrate_scores(scores, holds, ["a", "b"], 0.02, unsure_band=0.99)


def test_bootstrap_interval_is_seeded_and_covers_the_rate():
    hits = np.r_[np.ones(30), np.zeros(70)]
    a, b = bootstrap_rate(hits, 500, seed=1), bootstrap_rate(hits, 500, seed=1)
    assert a == b and a["value"] == pytest.approx(0.3)
    assert 0.15 < a["ci"][0] < 0.3 < a["ci"][1] < 0.45
    # all the same: the exact Clopper-Pearson interval, 0 of 5 -> [0, 1 - 0.025^(1/5)], 5 of 5 mirrored
    assert bootstrap_rate(np.zeros(5))["ci"] == pytest.approx([0.0, 1 - 0.025 ** (1 / 5)])
    assert bootstrap_rate(np.ones(5))["ci"] == pytest.approx([0.025 ** (1 / 5), 1.0])
    assert bootstrap_rate(np.zeros(0))["value"] is None


def test_expected_rule_holds_the_rate_on_new_images_on_average():
    """Uniform OK scores: a threshold's false-alarm rate on new images is ``1 - t``, known exactly; the
    threshold lies halfway between the (k+1)-th and k-th highest OK scores, so its mean is
    ``(k + 1/2) / (n + 1)``, within the ``(k + 1) / (n + 1)`` the rule bounds."""
    scores, holds = _scores(999, 300)
    out = calibrate_scores(scores, holds, ["a", "b"], 0.02, n_resamples=100)
    assert out["rule"] == "expected" and out["allowed_false_alarms"] == 19  # (19 + 1) / (999 + 1) = 0.02
    assert (scores[:999] >= out["thresholds"]["ng"]).sum() == 19
    assert out["false_alarm_new_images"]["expected"] == pytest.approx(0.02)
    rng = np.random.default_rng(5)
    sets = rng.random((4000, 100))
    new_rate = {rule: np.mean([1.0 - rank_threshold(ok, allowed_false_alarms(100, 0.05, rule)) for ok in sets])
                for rule in ("expected", "labelled")}
    assert new_rate["expected"] == pytest.approx(4.5 / 101, abs=0.0015)  # k = 4: (k + 1) / (n + 1) <= 0.05
    assert new_rate["labelled"] == pytest.approx(5.5 / 101, abs=0.0015)  # k = 5: above the target on new images
    assert new_image_false_alarm(100, 4)["expected"] == pytest.approx(5 / 101)


def test_confident_rule_holds_the_rate_with_the_stated_confidence():
    from scipy.stats import binom

    n, rate = 300, 0.05
    k = allowed_false_alarms(n, rate, "confident", 0.9)
    assert binom.cdf(k, n, rate) <= 0.1 < binom.cdf(k + 1, n, rate)
    rng = np.random.default_rng(6)
    # at the (k+1)-th highest score itself the share of sets above the rate is binom.cdf(k) exactly; the
    # threshold lies above it, so at most that
    sets = rng.random((4000, n))
    at_score = np.mean([1.0 - np.sort(ok)[::-1][k] > rate for ok in sets])
    assert at_score == pytest.approx(binom.cdf(k, n, rate), abs=0.012)
    assert np.mean([1.0 - rank_threshold(ok, k) > rate for ok in sets]) <= at_score
    bound = new_image_false_alarm(n, k, 0.9)["upper"]
    assert np.mean([1.0 - np.sort(ok)[::-1][k] > bound for ok in sets]) == pytest.approx(0.1, abs=0.015)


def test_too_few_ok_images_for_the_rule_is_one_clear_error():
    assert allowed_false_alarms(48, 0.02) == -1 and allowed_false_alarms(49, 0.02) == 0
    with pytest.raises(DenseVLMError, match=r"^cal: 20 OK \(defect-free\) images cannot hold a 0.02 .* at least 49"):
        check_enough_ok(20, 0.02, "expected", where="cal")
    with pytest.raises(DenseVLMError, match="at least 114"):  # 0.98^114 <= 0.1 < 0.98^113
        check_enough_ok(113, 0.02, "confident", 0.9)
    check_enough_ok(114, 0.02, "confident", 0.9)
    with pytest.raises(DenseVLMError, match="rate of 0"):
        check_enough_ok(1000, 0.0, "expected")
    scores, holds = _scores(20, 10)
    with pytest.raises(DenseVLMError, match="at least 49"):
        calibrate_scores(scores, holds, ["a", "b"], 0.02)
    with pytest.raises(DenseVLMError, match="not one of"):
        allowed_false_alarms(100, 0.02, "strict")
