"""Backbone.weights_sha256: stable for the same weights, changed by any in-place edit or reload."""

from __future__ import annotations

import torch

from densevlm.model import load_model


def test_weights_sha256_follows_the_weights():
    model = load_model("tiny-vit")
    first = model.backbone.weights_sha256()
    assert first == model.backbone.weights_sha256() and len(first) == 64
    state = {k: v.clone() for k, v in model.backbone.clip.state_dict().items()}
    with torch.no_grad():
        model.backbone.clip.logit_scale.add_(1.0)
    assert model.backbone.weights_sha256() != first
    model.backbone.clip.load_state_dict(state)
    assert model.backbone.weights_sha256() == first
