"""Inference: dense open-vocabulary segmentation of images (``densevlm segment``).

The entry point is ``densevlm.segment(model, image, vocab)``; here ``segment`` is its module.
Modules: ``result`` (result types, JSON schema), ``maps`` (pixel maps), ``components``
(regions and segments), ``segment`` (the API), ``batch``, ``io``, ``boxes``, ``overlay``
(folder runs). The names below load on first use, so ``io`` and ``boxes`` stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SCHEMA", "Segment", "SegmentResult", "predict", "default_size", "default_min_area"]

_HOMES = {
    "SCHEMA": "densevlm.inference.result",
    "Segment": "densevlm.inference.result",
    "SegmentResult": "densevlm.inference.result",
    "predict": "densevlm.inference.segment",
    "default_size": "densevlm.inference.segment",
    "default_min_area": "densevlm.inference.segment",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'densevlm.inference' has no attribute {name!r}")
