"""`densevlm export` through a subprocess: a fixed-size export, --check, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import densevlm
from densevlm.errors import DenseVLMError
from densevlm.export import load_onnx_model
from densevlm.export.manifest import EMBEDDINGS_FILE, ENCODER_FILE, MANIFEST_FILE, REGION_FILE
from tests.conftest import perturb_

SRC = Path(__file__).resolve().parents[2] / "src"


def _run(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(SRC), HF_HUB_OFFLINE="1", DENSEVLM_CACHE=str(cache), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "densevlm", "export", *args], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    model = densevlm.load_model("tiny-vit")
    perturb_(model.backbone.clip, seed=5)
    return model.save(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def cli_export(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "export"
    result = _run("--model", str(checkpoint), "--out", str(out), "--images", "2", "--threads", "1", "--no-regions",
                  cache=tmp_path_factory.mktemp("cache"))
    return out, result


def test_cli_export_writes_files_and_prints_parity(cli_export):
    out, result = cli_export
    assert result.returncode == 0, result.stderr
    for name in (ENCODER_FILE, EMBEDDINGS_FILE, MANIFEST_FILE):
        assert (out / name).is_file(), name
    assert not (out / REGION_FILE).exists()
    assert "PASSED" in result.stdout and "64x64" in result.stdout and "max abs" in result.stdout
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["export"]["dynamic"] is False and manifest["export"]["size"] == 64
    assert manifest["parity"]["passed"] is True
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_fixed_size_export_refuses_other_sizes(cli_export):
    out, _ = cli_export
    model = load_onnx_model(out, threads=1)
    assert not model.dynamic
    assert model.encode_dense(torch.zeros(2, 3, 64, 64)).shape == (2, 128, 8, 8)
    with pytest.raises(DenseVLMError) as e:
        model.encode_dense(torch.zeros(1, 3, 64, 96))
    assert "exported for 64x64" in str(e.value) and "--dynamic" in str(e.value)
    image = Image.fromarray(np.zeros((30, 90, 3), dtype=np.uint8))
    x, plan = model.prepare(image)
    assert tuple(x.shape) == (3, 64, 64) and plan.height == 21
    with pytest.raises(DenseVLMError):
        model.prepare(image, size=96)


def test_cli_check_reloads_the_recorded_model(cli_export, tmp_path):
    out, _ = cli_export
    report = tmp_path / "p.json"
    result = _run("--check", str(out), "--images", "1", "--threads", "1", "--json", str(report), cache=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "PASSED" in result.stdout
    assert json.loads(report.read_text())["passed"] is True


def test_cli_bad_model_is_one_line_exit_2(tmp_path):
    result = _run("--model", "no-such-model-xyz", "--out", str(tmp_path / "o"), cache=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("densevlm export: error:") and "no-such-model-xyz" in lines[0]
    assert not (tmp_path / "o").exists()


def test_cli_check_refuses_options_that_shape_a_new_export(cli_export, tmp_path):
    out, _ = cli_export
    result = _run("--check", str(out), "--size", "128", "--opset", "11", "--fp16-embeddings", cache=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "so --size, --opset, --fp16-embeddings cannot apply" in result.stderr
    result = _run("--check", str(out), "--format", "openvino", "--precision", "int8", cache=tmp_path)
    assert result.returncode == 2 and "so --format, --precision cannot apply" in result.stderr, result.stderr
    result = _run("--check", str(out), "--eval-data", str(tmp_path), cache=tmp_path)
    assert result.returncode == 2 and "so --eval-data cannot apply" in result.stderr, result.stderr
