"""Inference: dense open-vocabulary segmentation of images (``densevlm segment``).

The entry point is ``densevlm.segment(model, image, vocab)`` (defined in
:mod:`densevlm.inference.segment`; here the name ``segment`` is that module). The names below
are imported on first use, so the light submodules (``io``, ``boxes``) load without
torchvision and the text encoders.

Modules: ``result`` (Segment, SegmentResult, the JSON schema), ``maps`` (label and score map per
pixel), ``components`` (connected regions and their segments), ``segment`` (the API),
``batch`` (folders of images), ``io`` (input files and outputs), ``boxes`` (boxes files),
``overlay`` (the overlay picture).
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
