"""Teacher retrieval: temperature, confidence threshold and thing/stuff by section membership."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from densevlm.retrieval.teacher import RetrievalConfig, RetrievalStats, classify_regions
from densevlm.errors import DenseVLMError

TEXT = torch.eye(4)  # class k is the unit vector e_k
# membership is arbitrary on purpose: not "the first n classes are things"
CLASS_IS_THING = torch.tensor([False, True, False, True])


def _features(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_softmax_uses_tau_and_threshold_keeps_confident_regions():
    feats = _features([1.0, 0.2, 0.0, 0.0], [0.5, 0.5, 0.5, 0.45])
    r = classify_regions(feats, TEXT, CLASS_IS_THING, tau=10.0, threshold=0.3)
    expected = F.softmax(10.0 * feats @ TEXT.t(), dim=-1)
    assert torch.allclose(r.probs, expected)
    assert r.label.tolist() == [0, 0]
    assert r.kept.tolist() == [True, False]  # the second region is almost uniform
    sharper = classify_regions(feats, TEXT, CLASS_IS_THING, tau=100.0, threshold=0.3)
    assert sharper.kept.tolist() == [True, True]  # tau=100 makes every target near one-hot
    assert sharper.confidence[1] > r.confidence[1]


def test_thing_or_stuff_follows_the_vocabulary_section_of_the_top_class():
    feats = _features([0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0], [1.0, 0, 0, 0])
    r = classify_regions(feats, TEXT, CLASS_IS_THING, tau=50.0, threshold=0.3)
    assert r.label.tolist() == [1, 2, 3, 0]
    assert r.is_thing.tolist() == [True, False, True, False]


def test_mean_of_dense_and_crop_logits():
    dense = _features([1.0, 0, 0, 0])
    crop = _features([0, 0, 1.0, 0])
    r = classify_regions((dense, crop), TEXT, CLASS_IS_THING, tau=10.0, threshold=0.0, kind="mean")
    assert torch.allclose(r.logits, torch.tensor([[5.0, 0.0, 5.0, 0.0]]))


def test_split_lets_dense_decide_the_group_and_crops_name_the_thing():
    # region 0: dense says thing class 1, the crop says thing class 3 (and leans to stuff 0)
    # region 1: dense says stuff class 2; the crop's opinion must not matter
    dense = _features([0, 1.0, 0, 0], [0, 0, 1.0, 0.2])
    crop = _features([0.9, 0, 0, 0.5], [0, 1.0, 0, 0])
    r = classify_regions((dense, crop), TEXT, CLASS_IS_THING, tau=10.0, threshold=0.3, kind="split")
    assert r.is_thing.tolist() == [True, False]
    assert r.label.tolist() == [3, 2]  # the crop's best *thing* class, not its top class 0
    assert torch.allclose(r.logits[0], 10.0 * crop[0] @ TEXT.t())
    assert torch.allclose(r.logits[1], 10.0 * dense[1] @ TEXT.t())
    dense_probs = F.softmax(10.0 * dense @ TEXT.t(), dim=-1)
    assert torch.allclose(r.confidence, dense_probs.max(dim=-1).values)  # kept follows the dense verdict
    with pytest.raises(DenseVLMError, match="mean or split"):
        classify_regions((dense, crop), TEXT, CLASS_IS_THING, tau=10.0, threshold=0.3, kind="dense")


def test_stats_accumulate():
    stats = RetrievalStats(["a", "b", "c", "d"])
    feats = _features([0, 1.0, 0, 0], [0, 1.0, 0, 0], [0.5, 0.5, 0.5, 0.5])
    batch = stats.update(classify_regions(feats, TEXT, CLASS_IS_THING, tau=50.0, threshold=0.3))
    assert batch == {"kept_frac": pytest.approx(2 / 3), "thing_frac": 1.0}
    summary = stats.summary()
    assert summary["regions"] == 3 and summary["top_categories"] == [["b", 2]]


@pytest.mark.parametrize("kwargs, message", [({"features": "pixels"}, "choose crop, dense, mean, split"),
                                             ({"threshold": 1.5}, "must be in"), ({"tau": -1.0}, "must be positive")])
def test_bad_config(kwargs, message):
    with pytest.raises(DenseVLMError, match=message):
        RetrievalConfig(**kwargs).check()
