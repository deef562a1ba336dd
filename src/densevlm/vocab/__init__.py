"""Vocabularies (things and stuff), prompt templates and class text embeddings."""

from densevlm.vocab.embed import class_embeddings
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
