"""Region features and scores: pooling, region sources, labelled records, RLE masks, similarity.

Names are imported on first use, so ``regions.rle`` and ``regions.labelled`` load without torch.
"""

from __future__ import annotations

from densevlm.lazy import homes, loader

_MODULES = {
    "labelled": ("LabelledRegion",),
    "pooling": ("roi_pool", "mask_pool", "weighted_pool", "grid_token_weights", "mask_token_weights", "crop_boxes"),
    "rle": ("encode_rle", "decode_rle", "rle_counts", "rle_area"),
    "sources": ("GRID_SPLITS", "grid_boxes", "token_boxes", "segment_regions", "region_boxes"),
}
_HOMES = homes(__name__, _MODULES)

__all__ = ["similarity", *_HOMES]  # the module similarity loads on import, like any submodule
__getattr__ = loader(__name__, _HOMES)
