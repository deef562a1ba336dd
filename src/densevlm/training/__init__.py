"""Fine-tuning a student on unlabeled images (DenseVLM and baselines) and contrastive pretraining.

Names are imported on first use, so reading a config does not load the models.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "config": ("TrainConfig", "load_config_file"),
    "trainer": ("Trainer", "TrainResult", "train"),
    "checkpoints": ("ensemble_state",),
    "optim": ("apply_freezing", "param_groups", "warmup_cosine"),
    "pretrain": ("PretrainConfig", "pretrain"),
}
_EXPORTS = {name: f"densevlm.training.{module}" for module, names in _MODULES.items() for name in names}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'densevlm.training' has no attribute {name!r}")
