"""Manufacturing metrics against hand-computed cases and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from densevlm.errors import DenseVLMError
from densevlm.evaluation.manufacturing import (aupro, defect_confusion, false_alarm_threshold, image_auroc,
                                               pro_curve, recall_at_false_alarm)


def test_image_auroc_by_hand_and_against_sklearn():
    # pairs (NG, OK): (0.35 > 0.1), (0.35 < 0.4), (0.8 > 0.1), (0.8 > 0.4) -> 3 of 4
    assert image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert image_auroc([0, 1, 1], [0.5, 0.5, 0.9]) == pytest.approx(0.75)  # a tie counts one half
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.4
    s = rng.normal(size=300) + y
    assert image_auroc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert np.isnan(image_auroc([1, 1], [0.2, 0.3]))


def test_false_alarm_threshold_calls_exactly_the_allowed_share():
    rng = np.random.default_rng(1)
    ok = rng.random(1000)
    for rate in (0.0, 0.02, 0.05, 0.29):
        t = false_alarm_threshold(ok, rate)
        assert (ok >= t).sum() == int(round(rate * 1000))
    assert false_alarm_threshold([0.1, 0.2], 1.0) == float("-inf")
    t = false_alarm_threshold([0.3, 0.3, 0.3], 0.5)  # one allowed, but the scores tie: none may pass
    assert t > 0.3
    with pytest.raises(DenseVLMError, match="in \\[0, 1\\]"):
        false_alarm_threshold([0.1], 1.5)


def test_recall_at_false_alarm_by_hand():
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.9, 0.25, 0.5, 0.95, 0.85]
    recall, t = recall_at_false_alarm(labels, scores, 0.25)  # one OK may pass: threshold between 0.3 and 0.9
    assert t == pytest.approx(0.6) and recall == pytest.approx(0.5)
    recall, t = recall_at_false_alarm(labels, scores, 0.0)  # above 0.9: only 0.95
    assert recall == pytest.approx(0.25)


def test_defect_confusion_counts_rows_true_columns_predicted():
    m = defect_confusion([0, 0, 1, 2, 2], [0, 1, 1, -1, 3], 3)
    assert m.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 2]]


def test_aupro_hand_computed_case():
    # one 2x3 image: region {(0,0), (0,1)}, four normal pixels
    masks = np.array([[[1, 1, 0], [0, 0, 0]]], dtype=bool)
    maps = np.array([[[0.9, 0.5, 0.8], [0.3, 0.2, 0.1]]])
    fpr, pro = pro_curve(masks, maps)
    assert fpr.tolist() == pytest.approx([0, 0, 0.25, 0.25, 0.5, 0.75, 1.0])
    assert pro.tolist() == pytest.approx([0, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0])
    # PRO 0.5 on [0, 0.25] and 1.0 on [0.25, 0.3]: (0.125 + 0.05) / 0.3
    assert aupro(masks, maps) == pytest.approx(0.175 / 0.3)
    assert aupro(masks, maps, max_fpr=1.0) == pytest.approx(0.5 * 0.25 + 0.75)


def test_aupro_weights_regions_equally_and_is_one_for_a_perfect_map():
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, :3, :3] = True  # a large region (9 px)
    masks[1, 0, 0] = True  # a one-pixel region in another image
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0)
    maps = np.zeros((2, 4, 4))
    maps[1, 0, 0] = 1.0  # finds only the small region: PRO 0.5 at FPR 0, then everything else ties at 0
    fpr, pro = pro_curve(masks, maps)
    assert fpr.tolist() == [0.0, 0.0, 1.0] and pro.tolist() == pytest.approx([0.0, 0.5, 1.0])
    # cut at 0.3: PRO 0.65 there; trapezoid (0.5 + 0.65) / 2 * 0.3, normalised by 0.3
    assert aupro(masks, maps) == pytest.approx(0.575)
    with pytest.raises(DenseVLMError, match="at least one defect pixel"):
        aupro(np.zeros((1, 2, 2), dtype=bool), np.zeros((1, 2, 2)))
