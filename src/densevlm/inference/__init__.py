"""Inference: dense open-vocabulary segmentation of images (``densevlm segment``).

The entry point is ``densevlm.segment(model, image, vocab)`` (defined in
:mod:`densevlm.inference.segment`). ``SegmentResult`` and ``Segment`` are imported on first
use, so the light submodules (``io``, ``boxes``) load without torchvision and the text encoders.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Segment", "SegmentResult"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("densevlm.inference.segment"), name)
    raise AttributeError(f"module 'densevlm.inference' has no attribute {name!r}")
