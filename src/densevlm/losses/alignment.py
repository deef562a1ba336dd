"""Region-language alignment losses: DenseVLM's decoupled KL, its ablations, and CLIPSelf.

All KL terms are ``KL(teacher || student)`` summed over classes and averaged over the regions
of a group (``F.kl_div(log_softmax(student), softmax(teacher), reduction="batchmean")``), with
logits already multiplied by the logit scale (:func:`densevlm.regions.similarity.logits`).
Group means can be taken over a *global* region count (passed by the trainer under DDP), so
that N processes with batch B compute the same gradient as one process with batch N*B.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["METHODS", "kl_to_teacher", "decoupled_alignment_loss", "thing_mass_loss", "clipself_loss"]

METHODS = ("densevlm", "nodecouple", "stuffonly", "clipself")


def kl_to_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-region ``KL(softmax(teacher) || softmax(student))`` over the given columns.

    Args:
        student_logits, teacher_logits: ``[N, K']`` scaled logits over the same classes.

    Returns:
        ``[N]`` non-negative KL values (nats).
    """
    log_q = F.log_softmax(student_logits.float(), dim=-1)
    log_p = F.log_softmax(teacher_logits.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def decoupled_alignment_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    region_is_thing: torch.Tensor,
    class_is_thing: torch.Tensor,
    variant: str = "densevlm",
    counts: Optional[tuple[float, float]] = None,
    weights: Optional[torch.Tensor] = None,
    thing_weight: float = 1.0,
) -> torch.Tensor:
    """DenseVLM's decoupled loss and its ablations.

    * ``densevlm``: thing regions -> KL over thing classes only; stuff regions -> KL over all
      classes; the two group means are added.
    * ``stuffonly``: as densevlm, but stuff regions use the stuff classes only.
    * ``nodecouple``: every region -> KL over all classes (a single mean).

    Args:
        student_logits, teacher_logits: ``[N, K]`` scaled logits of the kept regions (each
            model against its own text embeddings of the same vocabulary).
        region_is_thing: ``[N]`` bool, the teacher's thing/stuff decision per region.
        class_is_thing: ``[K]`` bool, vocabulary section membership.
        counts: global ``(n_thing, n_stuff)`` (or ``(n_all, 0)`` for nodecouple) to divide by
            instead of this batch's counts.
        weights: ``[N]`` per-region weights (e.g. reviewed regions count more); default 1.
        thing_weight: multiplier of the thing group's mean (for ``nodecouple``, of the thing
            regions' terms in the single mean; ``counts`` stay unweighted).

    Returns:
        A scalar; exactly 0 (with a gradient path) when a group is empty, never NaN.
    """
    if variant not in ("densevlm", "nodecouple", "stuffonly"):
        raise ValueError(f"unknown variant {variant!r}")
    w = torch.ones(student_logits.shape[0], device=student_logits.device) if weights is None else weights.float()
    zero = student_logits.sum() * 0.0
    things = class_is_thing.to(student_logits.device)
    t_rows = region_is_thing.to(student_logits.device)
    s_rows = ~t_rows
    if variant == "nodecouple":
        n = counts[0] if counts is not None else float(w.sum())
        if n <= 0:
            return zero
        scaled = w * torch.where(t_rows, thing_weight, 1.0)
        return (scaled * kl_to_teacher(student_logits, teacher_logits)).sum() / n + zero
    stuff_cols = ~things if variant == "stuffonly" else torch.ones_like(things)
    n_thing = counts[0] if counts is not None else float(w[t_rows].sum())
    n_stuff = counts[1] if counts is not None else float(w[s_rows].sum())
    loss = zero
    if bool(t_rows.any()) and n_thing > 0:
        kl = kl_to_teacher(student_logits[t_rows][:, things], teacher_logits[t_rows][:, things])
        loss = loss + thing_weight * (w[t_rows] * kl).sum() / n_thing
    if bool(s_rows.any()) and n_stuff > 0:
        kl = kl_to_teacher(student_logits[s_rows][:, stuff_cols], teacher_logits[s_rows][:, stuff_cols])
        loss = loss + (w[s_rows] * kl).sum() / n_stuff
    return loss


def thing_mass_loss(
    student_logits: torch.Tensor,
    class_is_thing: torch.Tensor,
    count: Optional[float] = None,
    weights: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Mean of ``-log P_student(thing section)`` over regions the teacher calls things.

    The decoupled loss reads thing regions over thing classes only, so it never tells the
    student that such a region *is* a part rather than a surface; its thing-vs-stuff sense
    then comes from stuff regions alone and drifts towards stuff. This term supplies the
    missing half: the student's total probability on the thing section should be high.

    Args:
        student_logits: ``[N, K]`` scaled logits of thing regions over the whole vocabulary.
        class_is_thing: ``[K]`` bool, vocabulary section membership.
        count: global region count (or weight sum) to divide by (default: this batch's).
        weights: ``[N]`` per-region weights; default 1.

    Returns:
        A scalar in nats; 0 (with a gradient path) when ``N`` is 0.
    """
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    logits = student_logits.float()
    things = class_is_thing.to(logits.device)
    nll = torch.logsumexp(logits, dim=-1) - torch.logsumexp(logits[:, things], dim=-1)
    w = torch.ones_like(nll) if weights is None else weights.float()
    n = count if count is not None else float(w.sum())
    return (w * nll).sum() / n


def clipself_loss(student: torch.Tensor, target: torch.Tensor, count: Optional[float] = None) -> torch.Tensor:
    """CLIPSelf: mean of ``1 - cos(student RoI feature, frozen model's crop embedding)``.

    Args:
        student, target: ``[N, C]`` features (normalised inside).
        count: global region count to divide by (default ``N``).
    """
    if student.shape[0] == 0:
        return student.sum() * 0.0
    cos = (F.normalize(student.float(), dim=-1) * F.normalize(target.float(), dim=-1)).sum(dim=-1)
    return (1.0 - cos).sum() / (count if count is not None else student.shape[0])
