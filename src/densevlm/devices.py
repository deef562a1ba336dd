"""The one check of a requested torch device (``--device cpu|cuda|cuda:N|mps``).

A device the machine lacks used to surface as a raw driver error from deep inside model
loading; :func:`check_device` says instead that there is no such accelerator and names the
devices there are. Every command reaches it through ``cli._common.default_device`` or
:func:`densevlm.model.load_model`.
"""

from __future__ import annotations

import torch

from densevlm.errors import DenseVLMError

__all__ = ["available_devices", "check_device"]


def cuda_count() -> int:
    """Number of visible CUDA GPUs (0 without a driver or a CUDA build)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Device names usable on this machine: ``cpu``, then ``cuda:0 .. cuda:N-1``, then ``mps``."""
    return ["cpu"] + [f"cuda:{i}" for i in range(cuda_count())] + (["mps"] if mps_available() else [])


def check_device(requested: str | torch.device) -> torch.device:
    """``requested`` as a :class:`torch.device` after checking that this machine has it.

    Raises:
        DenseVLMError: not a device name, no accelerator of that type, or an index past the
            last one; the message names the devices there are.
    """
    if isinstance(requested, torch.device):
        device = requested
    else:
        try:
            device = torch.device(str(requested).strip())
        except (RuntimeError, ValueError):
            raise DenseVLMError(f"--device {requested!r} is not a device name; use cpu, cuda, cuda:N or mps "
                                f"(devices here: {', '.join(available_devices())})") from None
    here = available_devices()
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        count = cuda_count()
        if count == 0:
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise DenseVLMError(f"--device {requested}: there is no GPU on this machine ({why}); "
                                f"devices here: {', '.join(here)}")
        if device.index is not None and device.index >= count:
            raise DenseVLMError(f"--device {requested}: this machine has {count} CUDA GPU(s); "
                                f"devices here: {', '.join(here)}")
        return device
    if device.type == "mps":
        if "mps" not in here:
            raise DenseVLMError(f"--device {requested}: Apple MPS is not available on this machine; "
                                f"devices here: {', '.join(here)}")
        return device
    raise DenseVLMError(f"--device {requested}: densevlm runs on cpu, cuda or mps; devices here: {', '.join(here)}")
