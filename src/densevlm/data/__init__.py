"""Image collections, panoptic datasets and caption sources (the embedded world is :mod:`densevlm.data.synth`).

Names are imported on first use, so the embedded world loads without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "captions": ("CaptionBatch", "Captioner", "JsonlCaptionSource", "PanopticCaptionSource", "open_caption_source"),
    "images": ("FileListSource", "ImageSource", "TarShardSource", "expand_braces", "find_images", "open_image_source"),
    "panoptic": ("PanopticDataset", "PanopticSample", "read_panoptic_png", "resolve_panoptic_spec"),
}
_EXPORTS = {name: f"densevlm.data.{module}" for module, names in _MODULES.items() for name in names}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'densevlm.data' has no attribute {name!r}")
