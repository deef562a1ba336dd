"""Vocabularies (things and stuff), prompt templates and class text embeddings.

``class_embeddings`` needs torch and is imported on first use, so reading a vocabulary file
stays light (the review server uses it without torch). :func:`load_vocabulary` reads a text
vocabulary or an adapted one (``.npz``, :mod:`densevlm.vocab.adapted`).
"""

from __future__ import annotations

from densevlm.lazy import loader
from densevlm.vocab.adapted import AdaptedVocabulary
from densevlm.vocab.loading import load_vocabulary
from densevlm.vocab.prompts import TEMPLATE_SETS, fill_template, get_templates
from densevlm.vocab.vocabulary import Vocabulary, parse_vocabulary

__all__ = [
    "Vocabulary",
    "AdaptedVocabulary",
    "load_vocabulary",
    "parse_vocabulary",
    "class_embeddings",
    "TEMPLATE_SETS",
    "fill_template",
    "get_templates",
]
__getattr__ = loader(__name__, {"class_embeddings": "densevlm.vocab.embed"})
