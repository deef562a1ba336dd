"""AdamW parameter groups and the learning-rate schedule shared by pretraining and fine-tuning."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["param_groups", "warmup_cosine"]


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on matrices only; none on biases, norms, scales and embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "embedding" in name or "logit_scale" in name or name.endswith(("cls_token", "pos_embed"))
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear from 0 over ``warmup`` steps, then cosine from 1 to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
