"""Region features and scores: pooling, region sources, labelled records, RLE masks, similarity.

Names are imported on first use, so ``regions.rle`` and ``regions.labelled`` load without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "labelled": ("LabelledRegion",),
    "pooling": ("roi_pool", "mask_pool", "weighted_pool", "grid_token_weights", "mask_token_weights", "crop_boxes"),
    "rle": ("encode_rle", "decode_rle", "rle_counts", "rle_area"),
    "sources": ("GRID_SPLITS", "grid_boxes", "segment_regions", "region_boxes"),
}
_EXPORTS = {name: f"densevlm.regions.{module}" for module, names in _MODULES.items() for name in names}

__all__ = ["similarity", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name == "similarity":
        return importlib.import_module("densevlm.regions.similarity")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'densevlm.regions' has no attribute {name!r}")
