"""Category retrieval with a frozen teacher VLM, and the candidates file it writes.

Names are imported on first use (both modules need torch).
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "teacher": ("FEATURE_KINDS", "Retrieval", "RetrievalConfig", "RetrievalStats", "classify_parts",
                "classify_regions", "part_blobs", "teacher_region_features"),
    "candidates": ("header_record", "write_candidates"),
}
_EXPORTS = {name: f"densevlm.retrieval.{module}" for module, names in _MODULES.items() for name in names}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'densevlm.retrieval' has no attribute {name!r}")
