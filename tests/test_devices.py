"""The CPU bf16 decision: an environment override, else the probe's ratio against MIN_SPEEDUP."""

from __future__ import annotations

import pytest
import torch

from densevlm import devices
from densevlm.errors import DenseVLMError


@pytest.fixture
def probe(monkeypatch):
    """Replace the timing probe by given (fp32, bf16) seconds; the list counts its calls."""
    calls = []

    def use(fp32: float, bf16: float) -> list:
        def fake(side: int = devices.PROBE_SIDE, repeats: int = devices.PROBE_REPEATS) -> tuple[float, float]:
            calls.append(side)
            return fp32, bf16
        monkeypatch.setattr(devices, "probe_cpu_matmul", fake)
        return calls

    monkeypatch.delenv(devices.CPU_BF16_ENV, raising=False)
    return use


def test_bf16_is_fast_only_when_the_probe_beats_fp32_by_the_margin(probe):
    probe(1e-3, 1e-3 / 4)  # AMX-like: 4x
    fast, why = devices.cpu_bf16_verdict()
    assert fast and why == "bf16 matrix products run 4.0x as fast as fp32 here (bf16 from 2x)"
    probe(1e-3, 2e-3)  # AVX-512 BF16 without AMX: 2x slower
    assert devices.cpu_bf16_verdict()[0] is False
    probe(1e-3, 4e-2)  # no bf16 units at all (AMD Zen 3): emulated, 40x slower
    assert devices.cpu_bf16_verdict() == (False, "bf16 matrix products run 0.025x as fast as fp32 here (bf16 from 2x)")
    probe(1e-3, 1e-3 / (devices.MIN_SPEEDUP * 0.9))  # faster, but by less than the margin
    assert devices.cpu_bf16_fast() is False
    probe(1e-3, 1e-3 / devices.MIN_SPEEDUP)
    assert devices.cpu_bf16_fast() is True


@pytest.mark.parametrize("value, fast", [("1", True), ("0", False), (" 1 ", True)])
def test_the_environment_overrides_without_measuring(probe, monkeypatch, value, fast):
    calls = probe(1e-3, 1e-3 / 4 if not fast else 1.0)  # the probe would say the opposite
    monkeypatch.setenv(devices.CPU_BF16_ENV, value)
    verdict, why = devices.cpu_bf16_verdict()
    assert verdict is fast and why == f"{devices.CPU_BF16_ENV}={value.strip()}"
    assert calls == []


def test_a_bad_environment_value_is_one_clear_error(probe, monkeypatch):
    probe(1e-3, 1e-4)
    monkeypatch.setenv(devices.CPU_BF16_ENV, "yes")
    with pytest.raises(DenseVLMError, match=f"{devices.CPU_BF16_ENV}='yes'.*1.*0"):
        devices.cpu_bf16_verdict()


def test_the_real_probe_times_both_kinds_once_and_restores_threads():
    threads = torch.get_num_threads()
    devices.probe_cpu_matmul.cache_clear()
    first = devices.probe_cpu_matmul(64, 2)
    assert all(t > 0 for t in first)
    assert devices.probe_cpu_matmul(64, 2) is first  # cached for the process
    assert torch.get_num_threads() == threads
