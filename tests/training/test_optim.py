"""Freezing, AdamW groups and the warm-up + cosine schedule."""

from __future__ import annotations

import pytest

from densevlm.model import load_model
from densevlm.training.optim import apply_freezing, param_groups, warmup_cosine


def test_schedule_shape():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0)


def test_only_trainable_matrices_decay():
    model = load_model("tiny-vit")
    model.backbone.clip.token_embedding.weight.requires_grad_(False)
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decay["params"] and all(p.ndim >= 2 for p in decay["params"])
    assert any(p.ndim < 2 for p in no_decay["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    grouped = [names[id(p)] for g in (decay, no_decay) for p in g["params"]]
    assert "backbone.clip.token_embedding.weight" not in grouped  # frozen parameters are left out
    assert len(grouped) == sum(p.requires_grad for p in model.parameters())
    assert all("positional_embedding" not in names[id(p)] for p in decay["params"])


def test_freezing_policy_keeps_text_embeddings_and_head_frozen():
    model = load_model("tiny-vit")
    names = apply_freezing(model, unlocked_blocks=2)
    assert names and all(".transformer.resblocks.2." in n or ".transformer.resblocks.3." in n for n in names)
    assert not any("token_embedding" in n or "positional_embedding" in n or n.endswith(".proj") for n in names)
    everything = apply_freezing(model, unlocked_blocks=-1, train_embed=True, train_head=True)
    assert any("conv1" in n for n in everything) and any(n.endswith("visual.proj") for n in everything)
    assert not any(".transformer.resblocks" in n and "visual" not in n for n in everything)  # text tower frozen
