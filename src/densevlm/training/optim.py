"""What is optimised and how: parameter freezing for fine-tuning, AdamW groups and the LR schedule."""

from __future__ import annotations

import math
from typing import Any

import torch

from densevlm.errors import DenseVLMError
from densevlm.model import DenseModel

__all__ = ["adamw_warmup_cosine", "apply_freezing", "param_groups", "warmup_cosine"]


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


def adamw_warmup_cosine(model: torch.nn.Module, lr: float, weight_decay: float, steps: int, warmup: int,
                        betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
                        ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over :func:`param_groups` of ``model``'s trainable parameters, and its per-step
    :func:`warmup_cosine` schedule (``warmup`` linear steps, cosine to 0 at ``steps``)."""
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, steps, warmup))
    return optimizer, schedule


def apply_freezing(model: DenseModel, unlocked_blocks: int = -1, train_embed: bool = False, train_head: bool = False) -> list[str]:
    """Freeze everything but the top ``unlocked_blocks`` image blocks (all when -1), optionally
    the embeddings and the head; then freeze what cannot reach the dense path (e.g. the last
    EVA block's query/key projections), so DDP sees no unused parameters.

    Returns:
        Names of the trainable parameters.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    groups = model.backbone.image_groups()

    def enable(items) -> None:
        for item in items:
            params = [item] if isinstance(item, torch.nn.Parameter) else list(item.parameters())
            for p in params:
                p.requires_grad_(True)

    blocks = groups["blocks"]
    n = len(blocks) if unlocked_blocks < 0 else min(unlocked_blocks, len(blocks))
    enable(blocks[len(blocks) - n:])
    if train_embed:
        enable(groups["embed"])
    if train_head:
        enable(groups["head"])
    probe = torch.zeros(1, 3, model.patch_size * 2, model.patch_size * 2, device=model.device)
    probe.normal_(generator=torch.Generator(device=model.device).manual_seed(0))
    was_training = model.training
    model.train()
    model.encode_dense(probe).sum().backward()
    model.train(was_training)
    names = []
    for name, p in model.named_parameters():
        if p.requires_grad and p.grad is None:
            p.requires_grad_(False)
        elif p.requires_grad:
            names.append(name)
        p.grad = None
    if not names:
        raise DenseVLMError("no trainable parameters: raise --unlocked-blocks or use --train-embed / --train-head")
    return names
