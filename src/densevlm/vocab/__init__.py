"""Vocabularies (things and stuff), prompt templates and class text embeddings.

``class_embeddings`` needs torch and is imported on first use, so reading a vocabulary file
stays light (the review server uses it without torch).
"""

from __future__ import annotations

from typing import Any

from densevlm.vocab.prompts import TEMPLATE_SETS, fill_template, get_templates
from densevlm.vocab.vocabulary import Vocabulary, load_vocabulary, parse_vocabulary

__all__ = [
    "Vocabulary",
    "load_vocabulary",
    "parse_vocabulary",
    "class_embeddings",
    "TEMPLATE_SETS",
    "fill_template",
    "get_templates",
]


def __getattr__(name: str) -> Any:
    if name == "class_embeddings":
        from densevlm.vocab.embed import class_embeddings

        return class_embeddings
    raise AttributeError(f"module 'densevlm.vocab' has no attribute {name!r}")
