"""Mixed precision of a training run (``--amp``).

``--amp auto`` picks, and logs in one line what it picked and why:

* on a CUDA GPU: bf16 autocast where the GPU supports it, else fp16 with a GradScaler;
* on the CPU: bf16 autocast where bf16 is measured to be fast on this CPU
  (:func:`densevlm.devices.cpu_bf16_verdict`: Intel AMX), else fp32; in a distributed run only
  when every process measured it fast, so all train alike. ``DENSEVLM_CPU_BF16=1``/``0``
  overrides the measurement. ``BENCHMARKS.md`` ("When bf16 helps") has the training steps and
  dense maps this rule was checked on, with and without AMX;
* on Apple MPS: fp32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch

from densevlm.devices import cpu_bf16_verdict
from densevlm.errors import DenseVLMError

__all__ = ["AMP_CHOICES", "Precision", "auto_precision", "resolve_precision"]

log = logging.getLogger(__name__)

AMP_CHOICES = ("auto", "off", "bf16", "fp16")


@dataclass(frozen=True)
class Precision:
    """Autocast to ``dtype`` on ``device`` when ``enabled``."""

    device: torch.device
    enabled: bool
    dtype: Optional[torch.dtype]

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype or torch.bfloat16, enabled=self.enabled)


def auto_precision(device: torch.device) -> tuple[str, str]:
    """The ``--amp`` setting ``auto`` stands for on ``device`` (``off``, ``bf16`` or ``fp16``) and why, in words."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "this GPU supports bf16"
        return "fp16", "this GPU lacks bf16"
    if device.type == "cpu":
        fast, why = cpu_bf16_verdict()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            votes = torch.tensor([int(fast)])
            torch.distributed.all_reduce(votes, op=torch.distributed.ReduceOp.MIN)
            if fast and not votes.item():
                fast, why = False, f"another process of the run measured bf16 as slow; here: {why}"
        return ("bf16" if fast else "off"), why
    return "off", f"no autocast on {device.type}"


def resolve_precision(amp: str, device: torch.device) -> Precision:
    """The autocast of ``--amp amp`` (``auto``, ``off``, ``bf16`` or ``fp16``) on ``device``.

    ``auto`` is :func:`auto_precision`'s choice, logged at INFO.

    Raises:
        DenseVLMError: ``fp16`` off a CUDA GPU, or an unknown setting.
    """
    if amp not in AMP_CHOICES:
        raise DenseVLMError(f"--amp {amp}: choose {', '.join(AMP_CHOICES)}")
    if amp == "auto":
        amp, why = auto_precision(device)
        log.info("--amp auto on %s picks %s: %s", device.type, "fp32" if amp == "off" else amp, why)
    if amp == "off":
        return Precision(device, False, None)
    if amp == "bf16":
        return Precision(device, True, torch.bfloat16)
    if device.type != "cuda":
        raise DenseVLMError("--amp fp16 needs a CUDA GPU; use bf16 or off on the CPU")
    return Precision(device, True, torch.float16)
