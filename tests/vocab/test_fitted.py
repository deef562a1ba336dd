"""The text-anchored linear probe of ``vocab adapt --method fit``: objective, gradient, optimum, behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densevlm.errors import DenseVLMError
from densevlm.vocab.fitted import DISTILL_LABELLED, _targets, fit_embeddings, objective, unreadable


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    text, feats, negatives = (_unit(rng.normal(size=s)) for s in ((5, 8), (6, 8), (30, 8)))
    reviewed = np.array([False, False, False, True, True])
    labels = np.array([3, 3, 3, 3, 4, 4])  # unequal counts: the cross-entropy is class-balanced
    weights = rng.uniform(0.5, 3.0, size=30)
    cannot_read = np.array([False, False, False, True, False])  # class 4 is reviewed but readable
    return text, feats, labels, negatives, reviewed, weights, cannot_read


def _torch_loss(rows, text, feats, labels, negatives, reviewed, weights, cannot_read, scale, anchor, distill,
                distill_labelled):
    """The module docstring's L written independently with torch ops (KL including the constant entropy of q)."""
    t = torch.from_numpy(text)
    emb = torch.cat([t[~torch.from_numpy(reviewed)], rows])  # the reviewed rows are the last ones here
    nll = torch.nn.functional.cross_entropy(scale * torch.from_numpy(feats) @ emb.T, torch.from_numpy(labels),
                                            reduction="none")
    ce = torch.stack([nll[torch.from_numpy(labels == c)].mean() for c in np.unique(labels)]).mean()
    g = torch.from_numpy(negatives)
    readable = torch.from_numpy(~cannot_read)
    q = torch.zeros(len(g), len(text), dtype=torch.float64)
    q[:, readable] = torch.softmax(scale * g @ t[readable].T, dim=1)
    unlabelled = q[:, torch.from_numpy(~reviewed)].sum(dim=1)
    b = distill * unlabelled + distill_labelled * (1 - unlabelled)
    log_p = torch.log_softmax(scale * g @ emb.T, dim=1)
    kl = (q * (torch.log(q.clamp_min(1e-300)) - log_p)).sum(dim=1)
    w = torch.from_numpy(weights)
    return ce + (w * b * kl).sum() / w.sum() + 0.5 * anchor * ((rows - t[torch.from_numpy(reviewed)]) ** 2).sum()


def test_the_gradient_is_that_of_an_independent_autograd_of_the_objective(problem):
    text, feats, labels, negatives, reviewed, weights, cannot_read = problem
    rng = np.random.default_rng(1)
    rows = text[reviewed] + 0.3 * rng.normal(size=(2, 8))
    targets = _targets(text, negatives, reviewed, cannot_read, 20.0, weights, 3.0, 0.5)
    loss, grad = objective(rows.ravel(), text, feats, labels, negatives, targets, reviewed, 20.0, 0.1)
    r = torch.tensor(rows, requires_grad=True)
    ref = _torch_loss(r, text, feats, labels, negatives, reviewed, weights, cannot_read, 20.0, 0.1, 3.0, 0.5)
    ref.backward()
    np.testing.assert_allclose(grad.reshape(2, 8), r.grad.numpy(), rtol=1e-7, atol=1e-9)
    q = targets / targets.sum(axis=1, keepdims=True)
    entropy = -(targets * np.log(np.where(q > 0, q, 1.0))).sum() / len(negatives)
    np.testing.assert_allclose(loss - entropy, ref.item(), rtol=1e-9)  # KL = cross-entropy - entropy of q


def test_targets_weigh_distillation_by_where_the_expert_labelled():
    text = np.eye(3)
    negatives = np.array([[1.0, 0.0, 0.0]])
    e = np.exp(2.0)
    # class 1 is a word the model cannot read: q is over classes 0 and 2, both unreviewed, so b = distill
    q = _targets(text, negatives, np.array([False, True, False]), np.array([False, True, False]), 2.0,
                 np.array([3.0]), 10.0, 0.1)
    np.testing.assert_allclose(q, [[10.0 * e / (e + 1), 0.0, 10.0 / (e + 1)]])  # one weight: its mean is itself
    # every class reviewed (the known ones confirmed): b = distill_labelled, and class 1 keeps its share
    q = _targets(text, negatives, np.array([True, True, True]), np.array([False, False, True]), 2.0,
                 np.array([3.0]), 10.0, 0.1)
    np.testing.assert_allclose(q, [[0.1 * e / (e + 1), 0.1 / (e + 1), 0.0]])
    # logit scale 0: q is uniform, a third of it on the one unreviewed class, so b = 10 / 3 + 0.1 * 2 / 3
    q = _targets(text, negatives, np.array([False, True, True]), np.zeros(3, bool), 0.0, np.array([1.0]), 10.0, 0.1)
    np.testing.assert_allclose(q, [[3.4 / 3, 3.4 / 3, 3.4 / 3]])


def test_unreadable_words_are_the_ones_the_text_names_on_under_a_quarter_of_their_regions():
    text = np.eye(3)
    feats = np.array([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    # class 1's regions are rows 2-5: the text names one of four (25 %): readable
    np.testing.assert_array_equal(unreadable(text, feats, np.array([0, 0, 1, 1, 1, 1, 2]), 10.0), [False] * 3)
    # class 1's regions are rows 2-6: one of five (20 %): a word the model cannot read
    np.testing.assert_array_equal(unreadable(text, feats, np.array([0, 0, 1, 1, 1, 1, 1]), 10.0),
                                  [False, True, False])


def test_the_fit_is_the_minimum_and_leaves_the_other_rows_alone(problem):
    text, feats, labels, negatives, reviewed, weights, _ = problem
    emb = fit_embeddings(text, feats, labels, negatives, reviewed, 20.0, anchor=0.1, distill=3.0, weights=weights)
    np.testing.assert_array_equal(emb[~reviewed], text[~reviewed].astype(np.float32))
    targets = _targets(text, negatives, reviewed, unreadable(text, feats, labels, 20.0), 20.0, weights, 3.0,
                       DISTILL_LABELLED)
    args = (text, feats, labels, negatives, targets, reviewed, 20.0, 0.1)
    loss, grad = objective(emb[reviewed].astype(np.float64).ravel(), *args)
    assert np.abs(grad).max() < 1e-3
    start, _ = objective(text[reviewed].ravel(), *args)
    assert loss < start
    assert ((feats @ emb.T).argmax(axis=1) == labels).sum() > ((feats @ text.T).argmax(axis=1) == labels).sum()


def angle(degrees) -> np.ndarray:
    """``[..., 2]`` unit vectors at ``degrees``."""
    return np.stack([np.cos(np.radians(degrees)), np.sin(np.radians(degrees))], axis=-1)


def test_keeping_the_model_s_predictions_stops_a_new_class_taking_its_neighbours():
    # two known classes at 0 and 90 degrees; a new class whose ten examples sit at 40-50 degrees
    text = np.array([angle(0.0), angle(90.0), [0.0, 0.0]])
    feats, labels = angle(np.linspace(40.0, 50.0, 10)), np.full(10, 2)
    negatives = angle(np.r_[np.linspace(-10.0, 30.0, 20), np.linspace(60.0, 100.0, 20)])
    reviewed = np.array([False, False, True])
    wins = {}
    for distill in (0.0, 10.0):
        emb = fit_embeddings(text, feats, labels, negatives, reviewed, 20.0, anchor=0.01, distill=distill)
        assert ((feats @ emb.T).argmax(axis=1) == 2).all()
        wins[distill] = int(((negatives @ emb.T).argmax(axis=1) == 2).sum())
    assert wins[10.0] == 0 < wins[0.0], wins


def test_confirmed_known_classes_keep_distillation_on():
    # as above, but the expert also confirmed five regions of each known class: every class is reviewed
    text = np.array([angle(0.0), angle(90.0), [0.0, 0.0]])
    feats = np.r_[angle(np.linspace(40.0, 50.0, 10)), angle(np.linspace(0.0, 5.0, 5)), angle(np.linspace(85.0, 90.0, 5))]
    labels = np.r_[np.full(10, 2), np.zeros(5, int), np.ones(5, int)]
    negatives = angle(np.r_[np.linspace(-10.0, 30.0, 20), np.linspace(60.0, 100.0, 20)])
    wins = {}
    for distill_labelled in (0.0, 10.0):
        emb = fit_embeddings(text, feats, labels, negatives, np.ones(3, bool), 20.0, anchor=0.01,
                             distill_labelled=distill_labelled)
        assert ((feats @ emb.T).argmax(axis=1) == labels).all()
        wins[distill_labelled] = int(((negatives @ emb.T).argmax(axis=1) == 2).sum())
    assert wins[10.0] < wins[0.0], wins


def test_a_confirmed_known_class_keeps_the_regions_the_model_gives_it():
    # the expert confirmed five regions of class 0 (not of class 1) besides the new class's ten: regions
    # near class 0 stay class 0 (when the target zeroed every reviewed class's share, they all went to 1)
    text = np.array([angle(0.0), angle(90.0), [0.0, 0.0]])
    feats = np.r_[angle(np.linspace(40.0, 50.0, 10)), angle(np.linspace(0.0, 10.0, 5))]
    labels = np.r_[np.full(10, 2), np.zeros(5, int)]
    near_0 = angle(np.linspace(-10.0, 20.0, 20))
    negatives = np.r_[near_0, angle(np.linspace(70.0, 100.0, 20))]
    emb = fit_embeddings(text, feats, labels, negatives, np.array([True, False, True]), 20.0, anchor=0.01)
    assert ((near_0 @ emb.T).argmax(axis=1) == 0).all()
    assert ((feats @ emb.T).argmax(axis=1) == labels).all()


def test_bad_input_is_one_line(problem):
    text, feats, labels, negatives, reviewed, _, _ = problem
    with pytest.raises(DenseVLMError, match="every label must be a reviewed class"):
        fit_embeddings(text, feats, np.zeros(6, int), negatives, reviewed, 20.0)
    with pytest.raises(DenseVLMError, match="do not match"):
        fit_embeddings(text, feats[:, :4], labels, negatives, reviewed, 20.0)
    for bad in ({"anchor": 0.0}, {"anchor": float("inf")}, {"distill": float("nan")}, {"distill": -1.0},
                {"distill_labelled": -0.1}):
        with pytest.raises(DenseVLMError, match="anchor must be finite and > 0"):
            fit_embeddings(text, feats, labels, negatives, reviewed, 20.0, **bad)
