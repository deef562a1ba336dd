"""Checkpoints of a training run: the resumable state (``state.pt``) and the weight-space
ensemble of the tuned and the original student (``last.pt``)."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Optional

import torch

from densevlm.fileio import atomic_torch_save
from densevlm.model import DenseModel

__all__ = ["ensemble_state", "ensembled_model", "save_state", "load_state"]

log = logging.getLogger(__name__)


def ensemble_state(tuned: dict[str, torch.Tensor], original: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """Weight-space ensemble: ``alpha * tuned + (1 - alpha) * original`` for floating tensors."""
    out = {}
    for k, v in tuned.items():
        if v.is_floating_point():
            out[k] = (alpha * v.float() + (1.0 - alpha) * original[k].float()).to(v.dtype)
        else:
            out[k] = v
    return out


def ensembled_model(student: DenseModel, original: dict[str, torch.Tensor], alpha: float) -> DenseModel:
    """A CPU copy of ``student`` (in eval mode) whose CLIP weights are the ensemble of its own and
    ``original`` (the CLIP state dict before tuning); see :func:`ensemble_state`."""
    tuned = {k: v.detach().cpu() for k, v in student.backbone.clip.state_dict().items()}
    model = copy.deepcopy(student).cpu().eval()
    model.backbone.clip.load_state_dict(ensemble_state(tuned, {k: v.cpu() for k, v in original.items()}, alpha))
    return model


def save_state(path: Path, student: DenseModel, optimizer: torch.optim.Optimizer, schedule: Any,
               scaler: torch.amp.GradScaler, step: int, skipped: int, history: list[dict[str, Any]]) -> None:
    """Write the resumable state atomically: the student's CLIP weights, optimizer, LR schedule,
    grad scaler, torch RNG, step, skipped-image count and the logged history."""
    clip_state = {k: v.detach().cpu() for k, v in student.backbone.clip.state_dict().items()}
    state = {
        "model": clip_state,
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": torch.get_rng_state(),
        "step": step,
        "skipped": skipped,
        "history": json.dumps(history),
    }
    atomic_torch_save(state, path)


def load_state(path: Path, student: DenseModel, optimizer: torch.optim.Optimizer, schedule: Any,
               scaler: torch.amp.GradScaler) -> Optional[tuple[int, int, list[dict[str, Any]]]]:
    """Restore what :func:`save_state` wrote into the given objects (and the torch RNG).

    Returns:
        ``(step, skipped, history)``, or None when ``path`` does not exist yet.
    """
    if not path.is_file():
        log.info("no %s yet: starting from step 0", path)
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    student.backbone.clip.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    if "scaler" in state and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    step, skipped = int(state["step"]), int(state["skipped"])
    log.info("resumed %s at step %d", path, step)
    return step, skipped, json.loads(state["history"])
