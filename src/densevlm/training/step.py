"""One optimisation step: the student's region features against the targets, then AdamW.

The student runs *through the DDP wrapper* (``forward``), so gradients really are averaged
across processes; group means in the losses use counts summed over processes, and the loss is
multiplied by the number of processes before the backward (DDP averages gradients), so N
processes with batch B compute the gradient of one process with batch N*B.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from densevlm.losses.alignment import clipself_loss, decoupled_alignment_loss, thing_mass_loss
from densevlm.regions import similarity
from densevlm.retrieval.teacher import Retrieval, RetrievalStats
from densevlm.training.config import TrainConfig
from densevlm.training.distributed import all_reduce_sum
from densevlm.training.precision import Precision
from densevlm.training.targets import RegionTargets

__all__ = ["StepLoss", "clipself_step_loss", "alignment_step_loss", "optimizer_step"]

RegionForward = Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor]
"""``(images [B, 3, S, S], boxes: B x [N_i, 4] content pixels) -> [sum N_i, C]`` region features."""


@dataclass
class StepLoss:
    """The loss of one step on this process (None when no region on any process carries weight),
    its number of regions, and ``kept_frac`` / ``thing_frac`` of the step's targets."""

    loss: Optional[torch.Tensor]
    regions: int
    stats: dict[str, Any]


def clipself_step_loss(forward: RegionForward, images: torch.Tensor, targets: list[RegionTargets],
                       precision: Precision) -> StepLoss:
    """CLIPSelf: each region's feature against the frozen copy's crop embedding."""
    device = precision.device
    boxes = [t.boxes for t in targets]
    target_emb = torch.cat([t.crop_emb for t in targets]).to(device)
    (n_all,) = all_reduce_sum([float(target_emb.shape[0])])
    with precision.autocast():
        feats = forward(images, [b.to(device) for b in boxes])
    loss = clipself_loss(feats, target_emb, count=n_all)
    return StepLoss(loss, int(target_emb.shape[0]), {"kept_frac": 1.0, "thing_frac": None})


def alignment_step_loss(cfg: TrainConfig, forward: RegionForward, images: torch.Tensor, targets: list[RegionTargets],
                        text_student: torch.Tensor, class_is_thing: torch.Tensor, logit_scale: float, stats: RetrievalStats,
                        precision: Precision, with_crops: bool) -> StepLoss:
    """The DenseVLM family (``cfg.method``): decoupled alignment to the teacher's retrieval on the
    kept regions, plus the thing-mass term and, when ``with_crops``, a CLIPSelf term on things.

    Args:
        text_student: ``[K, C]`` the student's class embeddings.
        class_is_thing: ``[K]`` bool.
        logit_scale: multiplier of the student's cosines.
        stats: running retrieval counters, updated with this step's targets.
    """
    device = precision.device
    r = Retrieval.cat([t.retrieval for t in targets])
    batch_stats = stats.update(r)
    boxes = [t.boxes[t.retrieval.kept] for t in targets]
    region_weights = torch.cat([t.weights if t.weights is not None else torch.ones(len(t.retrieval)) for t in targets])
    kept = r.select(r.kept)
    kept_weights = region_weights[r.kept]
    thing = kept.is_thing
    counts = all_reduce_sum([float(kept_weights[thing].sum()), float(kept_weights[~thing].sum())])
    if counts[0] + counts[1] == 0:
        return StepLoss(None, 0, batch_stats)
    if cfg.method == "nodecouple":
        counts = [counts[0] + counts[1], 0.0]
    with precision.autocast():
        feats = forward(images, [b.to(device) for b in boxes])
    student_logits = similarity.logits(feats.float(), text_student, logit_scale)
    loss = decoupled_alignment_loss(
        student_logits, kept.logits.to(device), thing, class_is_thing, cfg.method, tuple(counts),
        kept_weights.to(device), cfg.thing_weight,
    )
    if cfg.thing_mass_weight > 0 and counts[0] > 0:
        on_things = thing.to(device)
        loss = loss + cfg.thing_mass_weight * thing_mass_loss(
            student_logits[on_things], class_is_thing, counts[0], kept_weights[thing].to(device))
    if with_crops:
        crops = torch.cat([t.crop_emb[t.retrieval.kept] for t in targets]).to(device)
        on_things = thing.to(device)
        (n_thing,) = all_reduce_sum([float(on_things.sum())])
        if n_thing > 0:
            loss = loss + cfg.clipself_weight * clipself_loss(feats[on_things], crops[on_things], count=n_thing)
    return StepLoss(loss, int(r.kept.sum()), batch_stats)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   schedule: Any, world: int) -> None:
    """Backward of ``loss * world`` (DDP averages gradients over ``world`` processes), then an
    optimizer step through the grad scaler and a schedule step."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss * world).backward()
    scaler.step(optimizer)
    scaler.update()
    schedule.step()
