"""User-facing errors.

Every problem caused by user input (a file, a name, an argument) is raised as a
:class:`DenseVLMError` whose message is one line naming *what* went wrong, *where* (the file,
name or flag) and, when there is one, *how to fix it*. The command line prints the message
alone, without a traceback, and exits with status 2.
"""

from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["DenseVLMError", "nearest_names"]


class DenseVLMError(Exception):
    """A problem with user input, reported as one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def nearest_names(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """Format the ``n`` candidates closest to ``name`` as ``"a, b or c"`` (empty when none are close)."""
    close = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.4)
    if not close:
        return ""
    if len(close) == 1:
        return close[0]
    return ", ".join(close[:-1]) + " or " + close[-1]
