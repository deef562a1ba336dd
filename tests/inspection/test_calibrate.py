"""Calibration on synthetic score sets: the target false-alarm rate is hit exactly."""

from __future__ import annotations

import numpy as np
import pytest

from densevlm.errors import DenseVLMError
from densevlm.inspection.calibrate import bootstrap_rate, calibrate_scores


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
    out = calibrate_scores(scores, holds, ["scratch", "dent"], target, n_resamples=200)
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
    out = calibrate_scores(scores, holds, ["a", "b"], 0.02, unsure_band=0.05, n_resamples=200)
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
    assert bootstrap_rate(np.zeros(5))["ci"] == [0.0, 0.0]
    assert bootstrap_rate(np.zeros(0))["value"] is None
