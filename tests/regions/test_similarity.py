"""Similarity of features to class embeddings, checked against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from densevlm.errors import DenseVLMError
from densevlm.regions import similarity

# three classes in the plane: e_x, e_y and the diagonal (1, 1) / sqrt(2)
R = 1.0 / math.sqrt(2.0)
TEXT = torch.tensor([[1.0, 0.0], [0.0, 1.0], [R, R]])
# membership is arbitrary on purpose: not "the first n classes are things"
CLASS_IS_THING = torch.tensor([False, True, True])


def test_logits_are_scaled_cosines():
    feats = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    expected_cos = torch.tensor([[1.0, 0.0, R], [0.6, 0.8, 1.4 * R]])
    assert torch.allclose(similarity.cosine(feats, TEXT), expected_cos)
    assert torch.allclose(similarity.logits(feats, TEXT, 10.0), 10.0 * expected_cos)
    assert torch.allclose(similarity.logits(feats, TEXT, torch.tensor(2.5)), 2.5 * expected_cos)


def test_dense_maps_put_the_classes_on_the_channel_axis():
    # [C=2, h=1, w=2]: token (0, 0) points along x, token (0, 1) along y
    dense = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    out = similarity.logits(dense, TEXT, 4.0, dim=0)
    assert out.shape == (3, 1, 2)
    assert torch.allclose(out[:, 0, 0], torch.tensor([4.0, 0.0, 4.0 * R]))
    assert torch.allclose(out[:, 0, 1], torch.tensor([0.0, 4.0, 4.0 * R]))
    batched = similarity.logits(torch.stack([dense, dense.flip(0)]), TEXT, 4.0, dim=1)
    assert batched.shape == (2, 3, 1, 2)
    assert torch.allclose(batched[0], out) and torch.allclose(batched[1], out.flip(-1))


def test_probabilities_are_a_softmax_optionally_over_some_classes():
    scores = torch.tensor([[math.log(2.0), 0.0, 0.0]])  # exp: 2, 1, 1
    assert torch.allclose(similarity.probabilities(scores), torch.tensor([[0.5, 0.25, 0.25]]))
    things = similarity.probabilities(scores, classes=CLASS_IS_THING)
    assert torch.allclose(things, torch.tensor([[0.0, 0.5, 0.5]]))
    restricted = similarity.restrict(scores, CLASS_IS_THING)
    assert restricted[0, 0] == float("-inf") and restricted[0, 1:].tolist() == [0.0, 0.0]


def test_top_k_is_best_first_and_clipped_to_the_vocabulary():
    probs = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    values, indices = similarity.top_k(probs, 2)
    assert indices.tolist() == [[1, 2], [0, 2]]
    assert torch.allclose(values, torch.tensor([[0.5, 0.3], [0.6, 0.3]]))
    values, indices = similarity.top_k(probs, 5)
    assert indices.shape == (2, 3) and indices[0].tolist() == [1, 2, 0]


def test_is_thing_follows_section_membership():
    labels = torch.tensor([[2, 0], [1, 1]])
    assert similarity.is_thing(labels, CLASS_IS_THING).tolist() == [[True, False], [True, True]]


def test_mismatched_widths_are_one_clear_error():
    with pytest.raises(DenseVLMError, match="width 3 .* shape \\[3, 2\\]"):
        similarity.logits(torch.ones(4, 3), TEXT, 1.0)
    with pytest.raises(DenseVLMError, match="width 1"):
        similarity.cosine(torch.ones(1, 2, 2), TEXT, dim=0)
