"""Vocabularies (things and stuff), prompt templates and class text embeddings.

``class_embeddings`` needs torch and is imported on first use, so reading a vocabulary file
stays light (the review server uses it without torch).
"""

from __future__ import annotations

from densevlm.lazy import loader
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
__getattr__ = loader(__name__, {"class_embeddings": "densevlm.vocab.embed"})
