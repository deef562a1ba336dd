"""Mixed precision of a training run (``--amp``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from densevlm.errors import DenseVLMError

__all__ = ["Precision", "resolve_precision"]


@dataclass(frozen=True)
class Precision:
    """Autocast to ``dtype`` on ``device`` when ``enabled``."""

    device: torch.device
    enabled: bool
    dtype: Optional[torch.dtype]

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype or torch.bfloat16, enabled=self.enabled)


def resolve_precision(amp: str, device: torch.device) -> Precision:
    """``auto`` is bf16 on GPUs that support it, fp16 on other GPUs, off on the CPU; fp16 off a GPU
    raises :class:`DenseVLMError`."""
    if amp == "off" or (amp == "auto" and device.type == "cpu"):
        return Precision(device, False, None)
    if amp == "bf16" or (amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return Precision(device, True, torch.bfloat16)
    if device.type != "cuda":
        raise DenseVLMError("--amp fp16 needs a GPU; use bf16 or off on the CPU")
    return Precision(device, True, torch.float16)
