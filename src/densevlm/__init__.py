"""densevlm: dense open-vocabulary region recognition with DenseVLM's unbiased alignment.

The public surface (imported lazily, so the command line starts fast)::

    load_model(name_or_path, pretrained=None, device="cpu") -> DenseModel
    DenseRuntime   (the contract DenseModel and the exported runtimes share)
    Vocabulary, load_vocabulary
    segment(model, image, vocab) -> SegmentResult
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DenseModel": "densevlm.model",
    "DenseRuntime": "densevlm.dense",
    "load_model": "densevlm.model",
    "DenseVLMError": "densevlm.errors",
    "Vocabulary": "densevlm.vocab.vocabulary",
    "load_vocabulary": "densevlm.vocab.loading",
    "segment": "densevlm.inference.segment",
    "SegmentResult": "densevlm.inference.result",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'densevlm' has no attribute {name!r}")
