"""Checkpoints of a training run: the resumable state (``state.pt``) and the weight-space
ensemble of the tuned and the original student (``last.pt``).

Both carry a sha256 of their tensors, checked on reading; non-finite weights are never saved."""

from __future__ import annotations

import copy
import json
import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from densevlm.backbones.weights import nonfinite_tensors, tensor_digest
from densevlm.errors import DenseVLMError
from densevlm.fileio import atomic_torch_save
from densevlm.model import DenseModel

__all__ = ["ensemble_state", "ensembled_model", "TrainProgress", "write_state", "read_state", "save_state", "load_state"]

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


@dataclass
class TrainProgress:
    """Where a run stands, saved with its state: optimisation steps, skipped images, the logged
    history, and the teacher's retrieval counters (``stats``: :class:`RetrievalStats` fields;
    ``epoch_stats``: its summary at each epoch end), so ``retrieval.json`` of a resumed run is
    that of an uninterrupted one."""

    step: int = 0
    skipped: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    epoch_stats: list[dict[str, Any]] = field(default_factory=list)


def write_state(state: dict[str, Any], path: Path) -> None:
    """Write a resumable state atomically, with the sha256 of its tensors under ``"sha256"``."""
    atomic_torch_save({**state, "sha256": tensor_digest(state)}, path)


def read_state(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """Read what :func:`write_state` wrote, checking it has ``keys`` and matches its checksum.

    Raises:
        DenseVLMError: unreadable (damaged or foreign file), incomplete, or tensors changed since writing.
    """
    todo = "restore it from a copy, or start the run again without --resume"
    try:
        with warnings.catch_warnings():  # a foreign pickle warns before failing; the error below says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged or unsafe files
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise DenseVLMError(f"{path}: not a readable training state ({type(e).__name__}: {first}); {todo}") from None
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise DenseVLMError(f"{path}: not a readable training state (no {', '.join(missing)}); {todo}")
    digest = state.pop("sha256", None)
    if digest is None:
        log.warning("%s: written without a checksum (by an older densevlm); its tensors are not verified", path)
    elif tensor_digest(state) != digest:
        raise DenseVLMError(f"{path}: the training state does not match the checksum written with it (the file was "
                            f"damaged after it was saved); {todo}")
    return state


def save_state(path: Path, student: DenseModel, optimizer: torch.optim.Optimizer, schedule: Any,
               scaler: torch.amp.GradScaler, progress: TrainProgress) -> None:
    """Write the resumable state atomically: the student's CLIP weights, optimizer, LR schedule,
    grad scaler, torch RNG and ``progress``.

    Raises:
        DenseVLMError: a weight holds NaN or infinity (training diverged; nothing is written, so
            the last good checkpoint stays).
    """
    clip_state = {k: v.detach().cpu() for k, v in student.backbone.clip.state_dict().items()}
    bad = nonfinite_tensors(clip_state)
    if bad:
        raise DenseVLMError(
            f"{path.parent}: training diverged by step {progress.step}: {len(bad)} weight tensor(s) hold NaN or "
            f"infinity ({bad[0]} ...); not saved, the last checkpoint stays; lower --lr and resume or start again"
        )
    write_state({
        "model": clip_state,
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": torch.get_rng_state(),
        "step": progress.step,
        "progress": json.dumps(asdict(progress)),
    }, path)


def load_state(path: Path, student: DenseModel, optimizer: torch.optim.Optimizer, schedule: Any,
               scaler: torch.amp.GradScaler, steps: Optional[int] = None) -> Optional[TrainProgress]:
    """Restore what :func:`save_state` wrote into the given objects (and the torch RNG).

    Args:
        steps: the run's total steps now (``--steps``), which may not be below the step saved.

    Returns:
        The saved progress, or None when ``path`` does not exist yet.

    Raises:
        DenseVLMError: ``path`` is damaged (see :func:`read_state`), or its step is above ``steps``.
    """
    if not path.is_file():
        log.warning("--resume: no %s yet (a new --out, or a run stopped before its first checkpoint): "
                    "starting from step 0", path)
        return None
    state = read_state(path, ("model", "optimizer", "schedule", "rng", "step"))
    if steps is not None and int(state["step"]) > steps:
        raise DenseVLMError(f"--steps {steps} is below step {int(state['step'])}, which the run in {path.parent} "
                            f"reached; pass --steps {int(state['step'])} or more to continue it")
    student.backbone.clip.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    if "scaler" in state and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    saved = json.loads(state.get("progress", "{}"))
    progress = TrainProgress(**{"skipped": int(state.get("skipped", 0)), "history": json.loads(state.get("history", "[]")),
                                **saved, "step": int(state["step"])})
    log.info("resumed %s at step %d", path, progress.step)
    return progress
