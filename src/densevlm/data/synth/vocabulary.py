"""The embedded world's vocabulary (10 things, 4 of them defects, 6 stuff), as a vocabulary file and as a :class:`Vocabulary`.

What every command uses when no ``--vocab`` is given, and what :func:`write_world` saves as ``vocab.txt``.
"""

from __future__ import annotations

from typing import Sequence

from densevlm.data.synth.categories import DEFECTS, STUFF, THINGS, Category
from densevlm.vocab import Vocabulary, parse_vocabulary

__all__ = ["default_vocabulary", "world_vocabulary_text"]


def world_vocabulary_text(extra: Sequence[Category] = ()) -> str:
    """The world's classes (plus ``extra`` ones: the plant words, a shift's new classes) in the vocabulary
    file format; every defect (``supercategory == "defect"``) is listed under ``[defects]`` too."""
    lines = ["# densevlm embedded world: parts and defects on factory surfaces", "[things]"]
    lines += [c.name for c in THINGS + tuple(c for c in extra if c.isthing)]
    lines += ["[stuff]"]
    lines += [c.name for c in STUFF + tuple(c for c in extra if not c.isthing)]
    lines += ["[defects]"]
    lines += [c.name for c in DEFECTS + tuple(c for c in extra if c.supercategory == "defect")]
    return "\n".join(lines) + "\n"


def default_vocabulary() -> Vocabulary:
    """The embedded world's vocabulary (10 things, 6 stuff)."""
    return parse_vocabulary(world_vocabulary_text(), source="embedded world")
