"""--amp: what auto picks on each device, and the one line that says so."""

from __future__ import annotations

import logging

import pytest
import torch

from densevlm import devices
from densevlm.errors import DenseVLMError
from densevlm.training import precision
from densevlm.training.precision import resolve_precision

CPU = torch.device("cpu")


@pytest.mark.parametrize("fast, dtype", [(True, torch.bfloat16), (False, None)])
def test_auto_on_the_cpu_follows_the_bf16_verdict_and_logs_why(monkeypatch, caplog, fast, dtype):
    monkeypatch.setattr(precision, "cpu_bf16_verdict", lambda: (fast, "the probe said so"))
    with caplog.at_level(logging.INFO, logger=precision.__name__):
        p = resolve_precision("auto", CPU)
    assert p.enabled is fast and p.dtype == dtype and p.device == CPU
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"--amp auto on cpu picks {'bf16' if fast else 'fp32'}: the probe said so"]


@pytest.mark.parametrize("value", ["0", "1"])
def test_the_environment_override_reaches_auto(monkeypatch, value):
    monkeypatch.setenv(devices.CPU_BF16_ENV, value)
    assert resolve_precision("auto", CPU).enabled is (value == "1")


def test_explicit_settings_ignore_the_verdict(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_verdict", lambda: pytest.fail("an explicit --amp must not measure"))
    assert resolve_precision("off", CPU).enabled is False
    bf16 = resolve_precision("bf16", CPU)
    assert bf16.enabled and bf16.dtype == torch.bfloat16
    with bf16.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_fp16_off_a_gpu_and_unknown_settings_are_one_line_errors():
    with pytest.raises(DenseVLMError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", CPU)
    with pytest.raises(DenseVLMError, match="--amp fp8: choose auto, off, bf16, fp16"):
        resolve_precision("fp8", CPU)


def test_auto_without_cuda_or_cpu_is_fp32():
    assert resolve_precision("auto", torch.device("mps")).enabled is False  # no device is touched


def test_a_distributed_run_takes_bf16_only_if_every_process_measured_it_fast(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_verdict", lambda: (True, "fast here"))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)

    def other_rank_slow(t, op):
        assert op == torch.distributed.ReduceOp.MIN
        t.zero_()

    monkeypatch.setattr(torch.distributed, "all_reduce", other_rank_slow)
    amp, why = precision.auto_precision(CPU)
    assert amp == "off" and "another process" in why and "fast here" in why
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t, op: None)  # every rank agreed
    assert precision.auto_precision(CPU)[0] == "bf16"
