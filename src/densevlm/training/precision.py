"""Mixed precision of a training run (``--amp``).

``--amp auto`` picks, and logs in one line what it picked and why:

* on a CUDA GPU: bf16 autocast where the GPU supports it, else fp16 with a GradScaler;
* on the CPU: fp32, and bf16 autocast only with ``DENSEVLM_CPU_BF16=1`` on a CPU where bf16 is
  fast (:func:`densevlm.devices.cpu_bf16_verdict`: Intel AMX; in a distributed run only when every
  process agrees, so all train alike). With AMX a trainable student's step is 1.05-1.7x faster in
  bf16, but a frozen ViT-L-14 teacher's forward (weights with ``requires_grad=False``) is 30x
  slower under CPU autocast with torch 2.14, so a first epoch would be far slower; until that is
  fixed auto does not pick bf16 by itself (``BENCHMARKS.md``, "When bf16 helps");
* on Apple MPS: fp32.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional

import torch

from densevlm.devices import CPU_BF16_ENV, cpu_bf16_verdict
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

    def grad_scaler(self) -> torch.amp.GradScaler:
        """The loss scaler fp16 needs (a pass-through for bf16 and fp32)."""
        return torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)


def auto_precision(device: torch.device) -> tuple[str, str]:
    """The ``--amp`` setting ``auto`` stands for on ``device`` (``off``, ``bf16`` or ``fp16``) and why, in words."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "this GPU supports bf16"
        return "fp16", "this GPU lacks bf16"
    if device.type == "cpu":
        fast, why = cpu_bf16_verdict()
        if fast and os.environ.get(CPU_BF16_ENV, "").strip() != "1":
            fast, why = False, (f"{why}, but a frozen teacher runs up to 30x slower under it (BENCHMARKS.md); "
                                f"{CPU_BF16_ENV}=1 picks bf16")
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
