"""The shipped tiny student and teacher: they load offline and are the files the model card describes."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch

import densevlm
from densevlm.backbones.factory import BUILTIN_MODELS, builtin_path

CARD = Path(__file__).resolve().parents[2] / "models" / "README.md"


@pytest.mark.parametrize("name", list(BUILTIN_MODELS))
def test_shipped_file_matches_the_card(name):
    path = builtin_path(name)
    assert path.is_file(), f"{path} is missing"
    assert path.stat().st_size <= 10_000_000
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    card = CARD.read_text(encoding="utf-8")
    match = re.search(rf"`{re.escape(path.name)}`.*?sha256 `([0-9a-f]{{64}})`", card, flags=re.S)
    assert match, f"the model card lists no sha256 for {path.name}"
    assert match.group(1) == digest


@pytest.mark.parametrize("name", list(BUILTIN_MODELS))
def test_shipped_model_loads_and_encodes(name):
    model = densevlm.load_model(name)
    assert model.spec.config is not None and model.image_size == 64 and model.patch_size == 8
    with torch.inference_mode():
        dense = model.encode_dense(torch.zeros(1, 3, 64, 64))
        text = model.encode_text(["a bolt on a steel plate"])
    assert dense.shape == (1, 128, 8, 8) and torch.isfinite(dense).all()
    assert torch.allclose(text.norm(dim=-1), torch.ones(1), atol=1e-4)
    assert model.spec.source == name
