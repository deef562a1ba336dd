"""Text tower: prompt embeddings with the padding columns dropped equal the full-context ones."""

from __future__ import annotations

import torch

import densevlm
from densevlm.vocab.prompts import fill_template, get_templates
from tests.conftest import perturb_


def _full_context(backbone, tokens: torch.Tensor) -> torch.Tensor:
    return backbone.clip.encode_text(tokens)  # open_clip's own forward over all context positions


def test_trimmed_text_embeddings_equal_full_context_tiny():
    backbone = densevlm.load_model("tiny-teacher").backbone
    texts = [fill_template(t, n) for t in get_templates("tiny") for n in ("hex bolt", "rust spot", "belt")]
    tokens = backbone.tokenize(texts)
    assert int((tokens != 0).sum(1).max()) < tokens.shape[1]  # there is padding to drop
    with torch.no_grad():
        full, trimmed = _full_context(backbone, tokens), backbone.encode_text_tokens(tokens)
    assert trimmed.shape == full.shape
    assert float((trimmed - full).norm() / full.norm()) < 1e-5


def test_trimmed_text_embeddings_equal_full_context_vit_b16():
    torch.manual_seed(0)
    backbone = perturb_(densevlm.load_model("ViT-B-16").backbone)
    texts = ["a photo of a bolt.", "There is a rusty hex nut in the scene.", "belt"]
    tokens = backbone.tokenize(texts)
    with torch.no_grad():
        full, trimmed = _full_context(backbone, tokens), backbone.encode_text_tokens(tokens)
    rel = (trimmed - full).norm(dim=1) / full.norm(dim=1)
    assert float(rel.max()) < 1e-5
    # a different sentence gives a different embedding (the comparison can fail)
    assert float((full[0] - full[1]).norm() / full[0].norm()) > 1e-2
