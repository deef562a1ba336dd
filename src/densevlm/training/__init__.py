"""Fine-tuning a student on unlabeled images (DenseVLM and baselines) and contrastive pretraining.

Names are imported on first use, so reading a config does not load the models.
"""

from __future__ import annotations

from densevlm.lazy import homes, loader

_MODULES = {
    "config": ("TrainConfig", "load_config_file"),
    "trainer": ("Trainer", "TrainResult", "train"),
    "checkpoints": ("ensemble_state",),
    "optim": ("adamw_warmup_cosine", "apply_freezing", "param_groups", "warmup_cosine"),
    "pretrain": ("PretrainConfig", "pretrain"),
    "distill": ("DistillConfig", "distill"),
}
_HOMES = homes(__name__, _MODULES)

__all__ = list(_HOMES)
__getattr__ = loader(__name__, _HOMES)
