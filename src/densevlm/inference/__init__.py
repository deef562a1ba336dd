"""Inference: dense open-vocabulary segmentation of images (``densevlm segment``).

The entry point is ``densevlm.segment(model, image, vocab)``; here ``segment`` is its module.
Modules: ``result`` (result types, JSON schema), ``maps`` (pixel maps), ``components``
(regions and segments), ``segment`` (the API), ``batch``, ``io``, ``boxes``, ``overlay``
(folder runs). The names below load on first use, so ``io`` and ``boxes`` stay light.
"""

from __future__ import annotations

from densevlm.lazy import homes, loader

_HOMES = homes(__name__, {
    "result": ("SCHEMA", "Segment", "SegmentResult"),
    "segment": ("predict", "default_size", "default_min_area", "model_label"),
})

__all__ = list(_HOMES)
__getattr__ = loader(__name__, _HOMES)
