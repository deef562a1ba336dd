"""The alignment losses against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from densevlm.losses.alignment import clipself_loss, decoupled_alignment_loss, kl_to_teacher, thing_mass_loss


def _kl(p_logits, q_logits) -> float:
    p = np.exp(p_logits - np.max(p_logits))
    p /= p.sum()
    q = np.exp(q_logits - np.max(q_logits))
    q /= q.sum()
    return float((p * np.log(p / q)).sum())


def test_kl_matches_a_number_worked_by_hand():
    # teacher softmax([0, ln 3]) = [1/4, 3/4]; student uniform [1/2, 1/2]
    teacher = torch.tensor([[0.0, math.log(3.0)]])
    student = torch.zeros(1, 2)
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)  # = 0.130812...
    assert float(kl_to_teacher(student, teacher)[0]) == pytest.approx(expected, abs=1e-6)
    assert float(kl_to_teacher(teacher, teacher)[0]) == pytest.approx(0.0, abs=1e-7)


# classes: 0 bolt (thing), 1 gear (thing), 2 plate (stuff), 3 floor (stuff)
CLASS_IS_THING = torch.tensor([True, True, False, False])
TEACHER = torch.tensor([[3.0, 1.0, 0.5, -1.0], [0.2, -0.5, 2.0, 1.5], [1.0, 0.0, -1.0, 2.5]])
STUDENT = torch.tensor([[1.0, 2.0, 1.5, 0.0], [1.0, 0.0, 0.5, 0.5], [0.0, 0.5, 1.0, 1.0]])
REGION_IS_THING = torch.tensor([True, False, False])


def test_decoupled_thing_regions_use_thing_classes_only():
    t, s = TEACHER.numpy(), STUDENT.numpy()
    thing_term = _kl(t[0, :2], s[0, :2])
    stuff_term = (_kl(t[1], s[1]) + _kl(t[2], s[2])) / 2
    got = decoupled_alignment_loss(STUDENT, TEACHER, REGION_IS_THING, CLASS_IS_THING, "densevlm")
    assert float(got) == pytest.approx(thing_term + stuff_term, abs=1e-6)


def test_stuffonly_and_nodecouple_variants():
    t, s = TEACHER.numpy(), STUDENT.numpy()
    stuff_only = _kl(t[0, :2], s[0, :2]) + (_kl(t[1, 2:], s[1, 2:]) + _kl(t[2, 2:], s[2, 2:])) / 2
    got = decoupled_alignment_loss(STUDENT, TEACHER, REGION_IS_THING, CLASS_IS_THING, "stuffonly")
    assert float(got) == pytest.approx(stuff_only, abs=1e-6)
    plain = sum(_kl(t[i], s[i]) for i in range(3)) / 3
    got = decoupled_alignment_loss(STUDENT, TEACHER, REGION_IS_THING, CLASS_IS_THING, "nodecouple")
    assert float(got) == pytest.approx(plain, abs=1e-6)


def test_global_counts_replace_batch_counts():
    t, s = TEACHER.numpy(), STUDENT.numpy()
    expected = _kl(t[0, :2], s[0, :2]) / 4 + (_kl(t[1], s[1]) + _kl(t[2], s[2])) / 10
    got = decoupled_alignment_loss(STUDENT, TEACHER, REGION_IS_THING, CLASS_IS_THING, "densevlm", counts=(4.0, 10.0))
    assert float(got) == pytest.approx(expected, abs=1e-6)


def test_weights_scale_regions():
    t, s = TEACHER.numpy(), STUDENT.numpy()
    w = torch.tensor([2.0, 1.0, 3.0])
    expected = 2 * _kl(t[0, :2], s[0, :2]) / 2 + (_kl(t[1], s[1]) + 3 * _kl(t[2], s[2])) / 4
    got = decoupled_alignment_loss(STUDENT, TEACHER, REGION_IS_THING, CLASS_IS_THING, "densevlm", weights=w)
    assert float(got) == pytest.approx(expected, abs=1e-6)



def test_thing_weight_scales_the_thing_mean_not_the_normalisation():
    # A weight that entered both numerator and group count would cancel out (an earlier bug).
    t, s = TEACHER.numpy(), STUDENT.numpy()
    thing_term = _kl(t[0, :2], s[0, :2])
    stuff_term = (_kl(t[1], s[1]) + _kl(t[2], s[2])) / 2
    got = decoupled_alignment_loss(STUDENT, TEACHER, REGION_IS_THING, CLASS_IS_THING, "densevlm", thing_weight=3.0)
    assert float(got) == pytest.approx(3 * thing_term + stuff_term, abs=1e-6)
    plain = (3 * _kl(t[0], s[0]) + _kl(t[1], s[1]) + _kl(t[2], s[2])) / 3
    got = decoupled_alignment_loss(STUDENT, TEACHER, REGION_IS_THING, CLASS_IS_THING, "nodecouple", thing_weight=3.0)
    assert float(got) == pytest.approx(plain, abs=1e-6)


@pytest.mark.parametrize("variant", ["densevlm", "stuffonly", "nodecouple"])
def test_empty_groups_give_zero_not_nan(variant):
    s = STUDENT.clone().requires_grad_(True)
    only_stuff = decoupled_alignment_loss(s, TEACHER, torch.zeros(3, dtype=torch.bool), CLASS_IS_THING, variant)
    only_things = decoupled_alignment_loss(s, TEACHER, torch.ones(3, dtype=torch.bool), CLASS_IS_THING, variant)
    nothing = decoupled_alignment_loss(s[:0], TEACHER[:0], torch.zeros(0, dtype=torch.bool), CLASS_IS_THING, variant)
    for value in (only_stuff, only_things, nothing):
        assert torch.isfinite(value)
    assert float(nothing.detach()) == 0.0
    nothing.backward()
    assert s.grad is not None and torch.count_nonzero(s.grad) == 0


def test_gradient_of_thing_region_ignores_stuff_columns():
    s = STUDENT.clone().requires_grad_(True)
    decoupled_alignment_loss(s, TEACHER, REGION_IS_THING, CLASS_IS_THING, "densevlm").backward()
    assert torch.all(s.grad[0, 2:] == 0)  # a thing region is never pushed along stuff classes
    assert torch.all(s.grad[1] != 0)  # a stuff region is contrasted against every class


def test_thing_mass_is_minus_log_of_the_thing_sections_probability():
    # row 0: softmax([1, 2, 1.5, 0]) puts (e + e^2) / (e + e^2 + e^1.5 + 1) on the two things
    e = math.e
    p0 = (e + e**2) / (e + e**2 + e**1.5 + 1)
    p1 = (e + 1) / (e + 1 + 2 * e**0.5)
    assert float(thing_mass_loss(STUDENT[:1], CLASS_IS_THING)) == pytest.approx(-math.log(p0), abs=1e-6)
    both = thing_mass_loss(STUDENT[:2], CLASS_IS_THING, weights=torch.tensor([1.0, 3.0]))
    assert float(both) == pytest.approx((-math.log(p0) - 3 * math.log(p1)) / 4, abs=1e-6)
    assert float(thing_mass_loss(STUDENT[:2], CLASS_IS_THING, count=10.0)) == pytest.approx(
        (-math.log(p0) - math.log(p1)) / 10, abs=1e-6)


def test_thing_mass_moves_mass_between_sections_not_within_things():
    s = STUDENT[:1].clone().requires_grad_(True)
    thing_mass_loss(s, CLASS_IS_THING).backward()
    assert torch.all(s.grad[0, :2] < 0) and torch.all(s.grad[0, 2:] > 0)  # descent raises things, lowers stuff
    # within the thing section the gradient follows the student's own shares: relative ranking untouched
    probs = torch.softmax(STUDENT[0, :2], dim=0)
    assert torch.allclose(s.grad[0, :2] / s.grad[0, :2].sum(), probs, atol=1e-6)
    empty = STUDENT[:0].clone().requires_grad_(True)
    value = thing_mass_loss(empty, CLASS_IS_THING)
    value.backward()
    assert float(value.detach()) == 0.0 and torch.isfinite(value)


def test_clipself_is_one_minus_cosine():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    expected = ((1 - 1 / math.sqrt(2)) + (1 - (-1))) / 2
    assert float(clipself_loss(a, b)) == pytest.approx(expected, abs=1e-6)
    assert float(clipself_loss(a[:0], b[:0])) == 0.0
