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


@pytest.mark.parametrize("fast, env", [(True, "1"), (False, "1"), (True, ""), (False, "")])
def test_auto_on_the_cpu_is_bf16_only_when_fast_and_asked_for_and_logs_why(monkeypatch, caplog, fast, env):
    monkeypatch.setattr(precision, "cpu_bf16_verdict", lambda: (fast, "the probe said so"))
    monkeypatch.setenv(devices.CPU_BF16_ENV, env)
    with caplog.at_level(logging.INFO, logger=precision.__name__):
        p = resolve_precision("auto", CPU)
    bf16 = fast and env == "1"
    assert p.enabled is bf16 and p.dtype == (torch.bfloat16 if bf16 else None) and p.device == CPU
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith(f"--amp auto on cpu picks {'bf16' if bf16 else 'fp32'}: the probe said so")
    assert (f"{devices.CPU_BF16_ENV}=1 picks bf16" in lines[0]) is (fast and not bf16)


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
    monkeypatch.setenv(devices.CPU_BF16_ENV, "1")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)

    def other_rank_slow(t, op):
        assert op == torch.distributed.ReduceOp.MIN
        t.zero_()

    monkeypatch.setattr(torch.distributed, "all_reduce", other_rank_slow)
    amp, why = precision.auto_precision(CPU)
    assert amp == "off" and "another process" in why and "fast here" in why
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t, op: None)  # every rank agreed
    assert precision.auto_precision(CPU)[0] == "bf16"
