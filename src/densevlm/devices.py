"""What this machine can run: the check of a requested torch device (``--device
cpu|cuda|cuda:N|mps``) and whether bf16 pays on its CPU.

A device the machine lacks used to surface as a raw driver error from deep inside model
loading; :func:`check_device` says instead that there is no such accelerator and names the
devices there are. Every command reaches it through ``cli._common.default_device`` or
:func:`densevlm.model.load_model`.

CPUs differ in bf16: with Intel AMX (``amx_bf16``, Sapphire Rapids and later) a bf16 matrix
product runs several times faster than fp32; with only AVX-512 BF16 (or none) torch's bf16
kernels are *slower* (``BENCHMARKS.md``, "When bf16 helps"). :func:`cpu_bf16_verdict` decides by
timing, once per process, a bf16 against an fp32 matrix product on one core
(:func:`probe_cpu_matmul`), not by reading CPU flags: the probe measures what the choice is
about (this torch build's kernels on this CPU, on any OS or architecture, e.g. an ARM core with
bf16 dot products, or a VM that lists ``amx_bf16`` but withholds the tile state); it costs
10-60 ms (0.2 s on an AVX2-only CPU); and the cases lie far apart beside the noise of a busy
machine: bf16 3-4x as fast as fp32 with AMX, 0.5x with AVX-512 BF16, 0.2x with plain AVX-512
(oneDNN capped by ``ONEDNN_MAX_CPU_ISA`` on an AMX machine). The environment variable
``DENSEVLM_CPU_BF16=1`` or ``0`` overrides it.
"""

from __future__ import annotations

import functools
import os
import time

import torch

from densevlm.errors import DenseVLMError

__all__ = ["available_devices", "check_device", "cpu_bf16_fast", "cpu_bf16_verdict", "probe_cpu_matmul",
           "CPU_BF16_ENV", "MIN_SPEEDUP"]

CPU_BF16_ENV = "DENSEVLM_CPU_BF16"
PROBE_SIDE = 256  # side of the probe's square matrices; at 128 even AMX is no faster than fp32
PROBE_REPEATS = 7
PROBE_BUDGET_S = 0.05  # stop repeating after this long (bf16 without AVX-512 takes ~40 ms per product)
MIN_SPEEDUP = 2.0  # bf16 counts as fast when its matrix product takes at most half the fp32 time


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


@functools.lru_cache(maxsize=1)
def probe_cpu_matmul(side: int = PROBE_SIDE, repeats: int = PROBE_REPEATS) -> tuple[float, float]:
    """Seconds of one ``[side, side] @ [side, side]`` matrix product in fp32 and in bf16 on one CPU thread.

    Each is the fastest of up to ``repeats`` runs after a warm-up (the fastest run is the one
    other processes disturbed least), the two kinds taking turns, stopping after two rounds once
    ``PROBE_BUDGET_S`` has passed. Runs once per process per argument; torch's thread count is
    restored afterwards.

    Returns:
        ``(fp32_seconds, bf16_seconds)``.
    """
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(side, side, generator=gen), torch.randn(side, side, generator=gen)
    pairs = {"fp32": (a, b), "bf16": (a.bfloat16(), b.bfloat16())}
    best = {k: float("inf") for k in pairs}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for x, y in pairs.values():
                torch.mm(x, y)
            began = time.perf_counter()
            for r in range(repeats):
                for kind, (x, y) in pairs.items():
                    start = time.perf_counter()
                    torch.mm(x, y)
                    best[kind] = min(best[kind], time.perf_counter() - start)
                if r >= 1 and time.perf_counter() - began > PROBE_BUDGET_S:
                    break
    finally:
        torch.set_num_threads(threads)
    return best["fp32"], best["bf16"]


def cpu_bf16_verdict() -> tuple[bool, str]:
    """Whether bf16 autocast should be faster than fp32 on this CPU, and why, in words.

    ``DENSEVLM_CPU_BF16=1`` (or ``0``) decides without measuring; otherwise bf16 is fast when the
    probe's bf16 matrix product (:func:`probe_cpu_matmul`) takes at most ``1 / MIN_SPEEDUP`` of the
    fp32 one. The margin leaves out CPUs where bf16 is only a little faster at the kernel, since
    autocast's casts and the fp32 parts of a model (norms, softmax, losses) eat a small gain.

    Raises:
        DenseVLMError: ``DENSEVLM_CPU_BF16`` is set to anything but ``0`` or ``1``.
    """
    env = os.environ.get(CPU_BF16_ENV, "").strip()
    if env in ("0", "1"):
        return env == "1", f"{CPU_BF16_ENV}={env}"
    if env:
        raise DenseVLMError(f"{CPU_BF16_ENV}={env!r}: set it to 1 (bf16 on the CPU), 0 (fp32) or leave it unset "
                            "(measure once)")
    fp32, bf16 = probe_cpu_matmul()
    fast = bf16 * MIN_SPEEDUP <= fp32
    ratio = fp32 / bf16
    shown = f"{ratio:.1f}" if ratio >= 0.1 else f"{ratio:.2g}"  # a CPU without bf16 units: 0.012x, not 0.0x
    return fast, f"bf16 matrix products run {shown}x as fast as fp32 here (bf16 from {MIN_SPEEDUP:g}x)"


def cpu_bf16_fast() -> bool:
    """Whether bf16 autocast pays on this CPU (:func:`cpu_bf16_verdict` without the reason)."""
    return cpu_bf16_verdict()[0]
