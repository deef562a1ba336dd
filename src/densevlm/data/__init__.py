"""Image collections, panoptic datasets and caption sources (the embedded world is :mod:`densevlm.data.synth`).

Names are imported on first use, so the embedded world loads without torch.
"""

from __future__ import annotations

from densevlm.lazy import homes, loader

_MODULES = {
    "captions": ("CaptionBatch", "Captioner", "JsonlCaptionSource", "PanopticCaptionSource", "open_caption_source"),
    "images": ("FileListSource", "ImageSource", "TarShardSource", "expand_braces", "find_images", "open_image_source"),
    "panoptic": ("PanopticDataset", "PanopticSample", "read_panoptic_png", "resolve_panoptic_spec"),
}
_HOMES = homes(__name__, _MODULES)

__all__ = list(_HOMES)
__getattr__ = loader(__name__, _HOMES)
