"""Dense-map distillation losses: zero at the teacher, padding ignored, the KL as written out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from densevlm.losses.distill import token_cosine_loss, token_kl_loss


def _maps(seed: int, shape=(2, 8, 3, 4)) -> torch.Tensor:
    return F.normalize(torch.randn(shape, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_both_terms_vanish_at_the_teacher_and_are_positive_elsewhere():
    teacher, student = _maps(0), _maps(1)
    valid = torch.ones(2, 3, 4, dtype=torch.bool)
    text = F.normalize(torch.randn(5, 8), dim=1)
    assert float(token_cosine_loss(teacher, teacher, valid)) == pytest.approx(0.0, abs=1e-6)
    assert float(token_kl_loss(teacher, teacher, valid, text, 20.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(token_cosine_loss(student, teacher, valid)) > 0.1
    assert float(token_kl_loss(student, teacher, valid, text, 20.0)) > 0.01


def test_tokens_outside_the_content_do_not_count():
    teacher, student = _maps(0), _maps(1)
    valid = torch.zeros(2, 3, 4, dtype=torch.bool)
    valid[:, :2, :3] = True
    text = F.normalize(torch.randn(5, 8), dim=1)
    changed = student.clone()
    changed[:, :, 2, :] = -teacher[:, :, 2, :]  # only padding tokens differ
    changed[:, :, :, 3] = _maps(7)[:, :, :, 3]
    for loss in (lambda s: token_cosine_loss(s, teacher, valid), lambda s: token_kl_loss(s, teacher, valid, text, 10.0)):
        assert float(loss(changed)) == pytest.approx(float(loss(student)), rel=1e-6)


def test_cosine_and_kl_match_their_definitions():
    teacher, student = _maps(2), _maps(3)
    valid = torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(4)) > 0.3
    text = F.normalize(torch.randn(6, 8), dim=1)
    s = student.permute(0, 2, 3, 1)[valid]
    t = teacher.permute(0, 2, 3, 1)[valid]
    cos = (1 - (s * t).sum(-1)).mean()
    p = F.softmax(15.0 * t @ text.t(), -1)
    kl = (p * (p.log() - F.log_softmax(15.0 * s @ text.t(), -1))).sum(-1).mean()
    assert float(token_cosine_loss(student, teacher, valid)) == pytest.approx(float(cos), rel=1e-5)
    assert float(token_kl_loss(student, teacher, valid, text, 15.0)) == pytest.approx(float(kl), rel=1e-5)


def test_no_valid_token_is_zero_with_a_gradient_and_bad_shapes_raise():
    student = _maps(1).requires_grad_()
    none = torch.zeros(2, 3, 4, dtype=torch.bool)
    loss = token_cosine_loss(student, _maps(0), none)
    loss.backward()
    assert float(loss.detach()) == 0.0 and student.grad is not None
    with pytest.raises(ValueError, match="valid mask"):
        token_cosine_loss(_maps(1), _maps(0), torch.ones(2, 4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="dense maps"):
        token_cosine_loss(_maps(1), _maps(0, (2, 8, 4, 3)), torch.ones(2, 3, 4, dtype=torch.bool))
