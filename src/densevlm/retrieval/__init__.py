"""Category retrieval with a frozen teacher VLM, and the candidates file it writes.

Names are imported on first use (both modules need torch).
"""

from __future__ import annotations

from densevlm.lazy import homes, loader

_MODULES = {
    "teacher": ("FEATURE_KINDS", "Retrieval", "RetrievalConfig", "RetrievalStats", "classify_parts",
                "classify_regions", "part_blobs", "teacher_region_features"),
    "candidates": ("header_record", "write_candidates"),
}
_HOMES = homes(__name__, _MODULES)

__all__ = list(_HOMES)
__getattr__ = loader(__name__, _HOMES)
