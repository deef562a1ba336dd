"""Teacher retrieval: temperature, confidence threshold and thing/stuff by section membership."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from densevlm.retrieval.teacher import RetrievalConfig, RetrievalStats, classify_parts, classify_regions, part_blobs
from densevlm.errors import DenseVLMError

TEXT = torch.eye(4)  # class k is the unit vector e_k
# membership is arbitrary on purpose: not "the first n classes are things"
CLASS_IS_THING = torch.tensor([False, True, False, True])


def _features(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_softmax_uses_logit_scale_and_threshold_keeps_confident_regions():
    feats = _features([1.0, 0.2, 0.0, 0.0], [0.5, 0.5, 0.5, 0.45])
    r = classify_regions(feats, TEXT, CLASS_IS_THING, logit_scale=10.0, threshold=0.3)
    expected = F.softmax(10.0 * feats @ TEXT.t(), dim=-1)
    assert torch.allclose(r.probs, expected)
    assert r.label.tolist() == [0, 0]
    assert r.kept.tolist() == [True, False]  # the second region is almost uniform
    sharper = classify_regions(feats, TEXT, CLASS_IS_THING, logit_scale=100.0, threshold=0.3)
    assert sharper.kept.tolist() == [True, True]  # logit_scale=100 makes every target near one-hot
    assert sharper.confidence[1] > r.confidence[1]


def test_thing_or_stuff_follows_the_vocabulary_section_of_the_top_class():
    feats = _features([0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0], [1.0, 0, 0, 0])
    r = classify_regions(feats, TEXT, CLASS_IS_THING, logit_scale=50.0, threshold=0.3)
    assert r.label.tolist() == [1, 2, 3, 0]
    assert r.is_thing.tolist() == [True, False, True, False]


def test_mean_of_dense_and_crop_logits():
    dense = _features([1.0, 0, 0, 0])
    crop = _features([0, 0, 1.0, 0])
    r = classify_regions((dense, crop), TEXT, CLASS_IS_THING, logit_scale=10.0, threshold=0.0, kind="mean")
    assert torch.allclose(r.logits, torch.tensor([[5.0, 0.0, 5.0, 0.0]]))


def test_split_lets_dense_decide_the_group_and_crops_name_the_thing():
    # region 0: dense says thing class 1, the crop says thing class 3 (and leans to stuff 0)
    # region 1: dense says stuff class 2; the crop's opinion must not matter
    dense = _features([0, 1.0, 0, 0], [0, 0, 1.0, 0.2])
    crop = _features([0.9, 0, 0, 0.5], [0, 1.0, 0, 0])
    r = classify_regions((dense, crop), TEXT, CLASS_IS_THING, logit_scale=10.0, threshold=0.3, kind="split")
    assert r.is_thing.tolist() == [True, False]
    assert r.label.tolist() == [3, 2]  # the crop's best *thing* class, not its top class 0
    assert torch.allclose(r.logits[0], 10.0 * crop[0] @ TEXT.t())
    assert torch.allclose(r.logits[1], 10.0 * dense[1] @ TEXT.t())
    dense_probs = F.softmax(10.0 * dense @ TEXT.t(), dim=-1)
    assert torch.allclose(r.confidence, dense_probs.max(dim=-1).values)  # kept follows the dense verdict
    with pytest.raises(DenseVLMError, match="mean or split"):
        classify_regions((dense, crop), TEXT, CLASS_IS_THING, logit_scale=10.0, threshold=0.3, kind="dense")


def test_stats_accumulate():
    stats = RetrievalStats(["a", "b", "c", "d"])
    feats = _features([0, 1.0, 0, 0], [0, 1.0, 0, 0], [0.5, 0.5, 0.5, 0.5])
    batch = stats.update(classify_regions(feats, TEXT, CLASS_IS_THING, logit_scale=50.0, threshold=0.3))
    assert batch == {"kept_frac": pytest.approx(2 / 3), "thing_frac": 1.0}
    summary = stats.summary()
    assert summary["regions"] == 3 and summary["top_categories"] == [["b", 2]]


@pytest.mark.parametrize("kwargs, message", [({"features": "pixels"}, "choose crop, dense, mean, split"),
                                             ({"threshold": 1.5}, "must be in"),
                                             ({"logit_scale": -1.0}, "must be positive")])
def test_bad_config(kwargs, message):
    with pytest.raises(DenseVLMError, match=message):
        RetrievalConfig(**kwargs).check()


def _two_class_map(thing_tokens: list[tuple[int, int]], rows: int = 3, cols: int = 4) -> torch.Tensor:
    """``[1, 2, rows, cols]`` map: channel 0 = the thing class's direction, 1 = the stuff class's."""
    dense = torch.zeros(1, 2, rows, cols)
    dense[0, 1] = 1.0
    for y, x in thing_tokens:
        dense[0, :, y, x] = torch.tensor([1.0, 0.0])
    return dense


BLOB_TEXT = torch.eye(2)  # class 0 = a part (thing), class 1 = a surface (stuff)
BLOB_IS_THING = torch.tensor([True, False])


def test_part_blobs_box_connected_thing_tokens_largest_first():
    # a 2-token blob on the top row and a single token at row 2, column 3 (diagonal is not connected)
    dense = _two_class_map([(0, 0), (0, 1), (2, 3), (1, 2)])
    dense[0, :, 1, 2] = torch.tensor([0.6, 0.8])  # weak stuff token between them: top class is stuff
    (boxes, feats), = part_blobs(dense, BLOB_TEXT, BLOB_IS_THING, [(3, 4)], max_parts=5)
    assert boxes.tolist() == [[0.0, 0.0, 2.0, 1.0], [3.0, 2.0, 4.0, 3.0]]  # XYXY in token units
    assert torch.allclose(feats, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    (boxes, _), = part_blobs(dense, BLOB_TEXT, BLOB_IS_THING, [(3, 4)], max_parts=1)
    assert boxes.tolist() == [[0.0, 0.0, 2.0, 1.0]]
    (boxes, _), = part_blobs(dense, BLOB_TEXT, BLOB_IS_THING, [(2, 4)], max_parts=5)  # row 2 is padding
    assert boxes.tolist() == [[0.0, 0.0, 2.0, 1.0]]


def test_part_blob_feature_is_the_normalised_mean_of_its_tokens():
    dense = _two_class_map([(0, 0), (0, 1)])
    dense[0, :, 0, 1] = F.normalize(torch.tensor([0.8, 0.6]), dim=0)
    (boxes, feats), = part_blobs(dense, BLOB_TEXT, BLOB_IS_THING, [(3, 4)], max_parts=5)
    assert torch.allclose(feats[0], F.normalize(torch.tensor([1.8, 0.6]), dim=0), atol=1e-6)
    (empty, none), = part_blobs(_two_class_map([]), BLOB_TEXT, BLOB_IS_THING, [(3, 4)], max_parts=5)
    assert empty.shape == (0, 4) and none.shape == (0, 2)


def test_classify_parts_names_the_best_thing_even_when_a_surface_scores_higher():
    text = torch.eye(3)  # bolt, gear (things), floor (stuff)
    is_thing = torch.tensor([True, True, False])
    feats = F.normalize(torch.tensor([[0.2, 0.5, 0.9], [0.9, 0.1, 0.1]]), dim=-1)
    r = classify_parts(feats, text, is_thing, logit_scale=10.0)
    assert r.label.tolist() == [1, 0] and bool(r.is_thing.all()) and bool(r.kept.all())
    thing_logits = 10.0 * feats[:, :2]
    assert torch.allclose(r.confidence, torch.softmax(thing_logits, dim=-1).max(dim=-1).values, atol=1e-6)
    assert torch.allclose(r.probs, torch.softmax(10.0 * feats, dim=-1), atol=1e-6)
