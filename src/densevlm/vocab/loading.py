"""One entry point for ``--vocab FILE``: a vocabulary text file or an adapted vocabulary (``.npz``)."""

from __future__ import annotations

from pathlib import Path

from densevlm.vocab.adapted import load_adapted
from densevlm.vocab.vocabulary import Vocabulary, read_vocabulary_text

__all__ = ["load_vocabulary"]


def load_vocabulary(path: str | Path) -> Vocabulary:
    """Read ``path``: ``.npz`` -> :class:`~densevlm.vocab.adapted.AdaptedVocabulary` (made by
    ``densevlm vocab adapt``), anything else -> the text format of :mod:`densevlm.vocab.vocabulary`."""
    if Path(path).suffix.lower() == ".npz":
        return load_adapted(path)
    return read_vocabulary_text(path)
