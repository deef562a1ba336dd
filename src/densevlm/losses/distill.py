"""Dense-map distillation losses: a student's dense map against its teacher's, token by token.

Both terms take ``[B, C, h, w]`` unit-norm dense maps of the same images (the student's and
the teacher's :meth:`~densevlm.model.DenseModel.encode_dense`) and a ``[B, h, w]`` bool mask
of the tokens that cover image content (letterbox padding carries no signal), and average over
the masked tokens of the batch:

* :func:`token_cosine_loss`: ``1 - cos(student token, teacher token)`` (the feature-mimicking
  term of CLIPSelf, Wu et al. 2024, applied per token rather than per region);
* :func:`token_kl_loss`: ``KL(softmax(s * t @ T) || softmax(s * x @ T))`` over the ``K``
  class embeddings ``T`` of a vocabulary at one logit scale ``s`` (Hinton et al. 2015,
  "Distilling the knowledge in a neural network", without the ``s^2`` gradient factor: the
  scale is the teacher's own and is not a softened temperature).
"""

from __future__ import annotations

import torch

from densevlm.losses.alignment import kl_to_teacher

__all__ = ["token_cosine_loss", "token_kl_loss"]


def _check(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor) -> None:
    if student.shape != teacher.shape or student.ndim != 4:
        raise ValueError(f"dense maps must both be [B, C, h, w], got {tuple(student.shape)} and {tuple(teacher.shape)}")
    b, _, h, w = student.shape
    if tuple(valid.shape) != (b, h, w):
        raise ValueError(f"valid mask must be [{b}, {h}, {w}], got {tuple(valid.shape)}")


def _mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``[B, h, w]`` values over the True cells of ``valid``; 0 (with a gradient path) when none."""
    n = valid.sum()
    if int(n) == 0:
        return values.sum() * 0.0
    return values[valid].sum() / n


def token_cosine_loss(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid tokens of ``1 - cos(student, teacher)``.

    Args:
        student: ``[B, C, h, w]`` unit-norm dense map (with gradients).
        teacher: ``[B, C, h, w]`` unit-norm dense map of the same images (a constant).
        valid: ``[B, h, w]`` bool, the tokens that cover image content.

    Returns:
        A scalar in ``[0, 2]``: 0 when every valid token points where the teacher's does.
    """
    _check(student, teacher, valid)
    cos = (student.float() * teacher.float()).sum(dim=1)
    return _mean(1.0 - cos, valid.to(cos.device))


def token_kl_loss(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, text: torch.Tensor,
                  logit_scale: float) -> torch.Tensor:
    """Mean over valid tokens of ``KL(p_teacher || p_student)`` over a vocabulary, in nats.

    Args:
        student, teacher, valid: as for :func:`token_cosine_loss`.
        text: ``[K, C]`` unit-norm class embeddings (shared by both models).
        logit_scale: the multiplier of the cosines (the teacher's ``logit_scale``).

    Returns:
        A non-negative scalar: 0 when every valid token's class distribution equals the teacher's.
    """
    _check(student, teacher, valid)
    text = text.float().to(student.device)
    s = (logit_scale * student.float().permute(0, 2, 3, 1)) @ text.t()
    t = (logit_scale * teacher.float().permute(0, 2, 3, 1)) @ text.t()
    kl = kl_to_teacher(s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1])).reshape(s.shape[:-1])
    return _mean(kl, valid.to(kl.device))
