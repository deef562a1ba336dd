"""The embedded world's vocabulary (10 things, 6 stuff), as a vocabulary file and as a :class:`Vocabulary`.

What every command uses when no ``--vocab`` is given, and what :func:`write_world` saves as ``vocab.txt``.
"""

from __future__ import annotations

from typing import Sequence

from densevlm.data.synth.categories import STUFF, THINGS, Category
from densevlm.vocab import Vocabulary, parse_vocabulary

__all__ = ["default_vocabulary", "world_vocabulary_text"]


def world_vocabulary_text(extra: Sequence[Category] = ()) -> str:
    """The world's classes (plus ``extra`` things, e.g. the plant words) in the vocabulary file format."""
    lines = ["# densevlm embedded world: parts and defects on factory surfaces", "[things]"]
    lines += [c.name for c in THINGS + tuple(extra)]
    lines += ["[stuff]"]
    lines += [c.name for c in STUFF]
    return "\n".join(lines) + "\n"


def default_vocabulary() -> Vocabulary:
    """The embedded world's vocabulary (10 things, 6 stuff)."""
    return parse_vocabulary(world_vocabulary_text(), source="embedded world")
