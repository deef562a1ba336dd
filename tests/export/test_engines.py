"""Engines: the engine read from an export's manifest, numpy runtimes, segment() on every engine,
and an export segmented in a process where importing PyTorch fails.

The exports (OpenVINO fp32 and ONNX, of tiny-student) are shared per module; the images are
scenes of a generated embedded world.
"""

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

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

import densevlm  # noqa: E402
from densevlm.data.synth import default_vocabulary, generate_scene  # noqa: E402
from densevlm.errors import DenseVLMError  # noqa: E402
from densevlm.export.build import export_edge  # noqa: E402
from densevlm.export.engines import infer_engine, load_engine  # noqa: E402
from densevlm.export.onnx import export_onnx  # noqa: E402
from densevlm.export.openvino import load_export  # noqa: E402

SRC = Path(__file__).resolve().parents[2] / "src"
LOAD_STUDENT = {"model": "tiny-student", "pretrained": None}

# Run densevlm with torch, torchvision, open_clip and timm made unimportable (a meta-path finder
# that refuses them), then print which of them got loaded anyway (none may).
BLOCKED = ("torch", "torchvision", "open_clip", "timm")
NO_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
        return None
sys.meta_path.insert(0, Block())
"""


@pytest.fixture(scope="module")
def student():
    return densevlm.load_model("tiny-student")


@pytest.fixture(scope="module")
def openvino_dir(student, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ov") / "student"
    export_edge(student, out, default_vocabulary(), precision="fp32", dynamic=True, threads=1, parity_images=1,
                load_args=LOAD_STUDENT)
    return out


@pytest.fixture(scope="module")
def onnx_dir(student, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "student"
    export_onnx(student, out, default_vocabulary(), dynamic=True, parity=False, load_args=LOAD_STUDENT)
    return out


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> list[Path]:
    """Eight embedded-world scenes as PNG files, one of them 96x64 (not square)."""
    folder = tmp_path_factory.mktemp("scenes")
    paths = []
    for i in range(8):
        image = Image.fromarray(generate_scene(seed=5, index=i, size=64).image)
        if i == 0:
            image = image.resize((96, 64), Image.BICUBIC)
        paths.append(folder / f"scene{i}.png")
        image.save(paths[-1])
    return paths


def test_engine_is_read_from_the_manifest(openvino_dir, onnx_dir, tmp_path):
    assert infer_engine(openvino_dir) == "openvino"
    assert infer_engine(onnx_dir / "image_encoder.onnx") == "onnx"
    assert infer_engine("tiny-student") == "torch"
    assert infer_engine(openvino_dir, "openvino") == "openvino"
    cases = [(openvino_dir, "onnx", "openvino export, not onnx"), (onnx_dir, "torch", "--engine onnx"),
             ("tiny-student", "openvino", "runs an export"), (tmp_path, None, "without densevlm_export.json"),
             (openvino_dir, "tensorrt", "unknown engine")]
    for model, engine, words in cases:
        with pytest.raises(DenseVLMError, match=words) as info:
            infer_engine(model, engine)
        assert "\n" not in str(info.value)
    with pytest.raises(DenseVLMError, match="--pretrained"):
        load_engine(openvino_dir, pretrained="openai")


def test_numpy_runtime_equals_torch_outputs(openvino_dir, scenes):
    as_torch = load_export(openvino_dir, threads=1, tensors="torch")
    as_numpy = load_export(openvino_dir, threads=1, tensors="numpy")
    image = Image.open(scenes[0])
    x_t, plan_t = as_torch.prepare(image)
    x_n, plan_n = as_numpy.prepare(image)
    assert isinstance(x_t, torch.Tensor) and isinstance(x_n, np.ndarray) and plan_t == plan_n
    np.testing.assert_array_equal(x_t.numpy(), x_n)
    dense_t, dense_n = as_torch.encode_dense(x_t[None]), as_numpy.encode_dense(x_n[None])
    assert isinstance(dense_t, torch.Tensor) and isinstance(dense_n, np.ndarray)
    np.testing.assert_array_equal(dense_t.numpy(), dense_n)
    assert isinstance(as_numpy.embed_vocabulary(default_vocabulary()), np.ndarray)
    boxes = [np.array([[0.0, 0.0, 32.0, 32.0], [8.0, 16.0, 64.0, 48.0]], np.float32)]
    logits_n = as_numpy.classify_boxes(dense_n, boxes)
    logits_t = as_torch.classify_boxes(dense_t, [torch.from_numpy(boxes[0])])
    assert logits_n.shape == (2, len(default_vocabulary()))
    np.testing.assert_allclose(logits_n, logits_t.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("engine", ["openvino", "onnx"])
def test_segment_labels_equal_torch(student, openvino_dir, onnx_dir, scenes, engine):
    runtime, used = load_engine(openvino_dir if engine == "openvino" else onnx_dir, threads=1)
    assert used == engine
    vocab = default_vocabulary()
    same = total = 0
    for path in scenes:
        ours = densevlm.segment(runtime, path, vocab)
        reference = densevlm.segment(student, path, vocab)
        assert ours.labels.shape == reference.labels.shape == (Image.open(path).height, Image.open(path).width)
        same += int((ours.labels == reference.labels).sum())
        total += ours.labels.size
        np.testing.assert_allclose(ours.scores, reference.scores, atol=1e-3)
    assert same / total >= 0.99, same / total


def test_segment_boxes_through_the_region_graph(student, openvino_dir, scenes):
    runtime, _ = load_engine(openvino_dir, threads=1)
    boxes = [[0, 0, 40, 30], [10, 20, 96, 64]]
    ours = densevlm.segment(runtime, scenes[0], default_vocabulary(), boxes=boxes)
    reference = densevlm.segment(student, scenes[0], default_vocabulary(), boxes=boxes)
    assert [s.category for s in ours.segments] == [s.category for s in reference.segments]
    for a, b in zip(ours.segments, reference.segments):
        assert abs(a.score - b.score) < 1e-3


def _without_torch(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
    script = NO_TORCH.format(blocked=BLOCKED) + code
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def test_segment_api_without_torch(student, openvino_dir, scenes, tmp_path):
    code = f"""
import json, numpy as np
import densevlm
from densevlm.data.synth import default_vocabulary
from densevlm.export.engines import load_engine
runtime, engine = load_engine({str(openvino_dir)!r}, threads=1)
labels = [densevlm.segment(runtime, p, default_vocabulary()).labels.tolist() for p in {[str(p) for p in scenes]!r}]
loaded = sorted(m for m in {BLOCKED!r} if m in sys.modules)
print(json.dumps({{"engine": engine, "labels": labels, "loaded": loaded}}))
"""
    done = _without_torch(code, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["engine"] == "openvino" and out["loaded"] == []
    same = total = 0
    for path, labels in zip(scenes, out["labels"]):
        reference = densevlm.segment(student, path, default_vocabulary()).labels
        same += int((np.array(labels) == reference).sum())
        total += reference.size
    assert same / total >= 0.99


def test_blocker_really_blocks_torch(tmp_path):
    done = _without_torch("import torch\n", tmp_path)
    assert done.returncode != 0 and "blocked by the test" in done.stderr


def test_cli_segment_openvino_without_torch_equals_torch(student, openvino_dir, scenes, tmp_path):
    """`densevlm segment --model EXPORT` (engine from the manifest) in a process where torch cannot
    be imported: the label maps equal the PyTorch engine's on >= 99 % of pixels, and no torch loaded."""
    folder = scenes[0].parent
    out = tmp_path / "seg"
    code = f"""
from densevlm.cli.main import main
status = main(["segment", {str(folder)!r}, "--model", {str(openvino_dir)!r}, "--out", {str(out)!r}, "--threads", "1",
               "--workers", "2", "--batch-size", "3", "-q"])
print("loaded", sorted(m for m in {BLOCKED!r} if m in sys.modules), "status", status)
"""
    done = _without_torch(code, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loaded [] status 0" in done.stdout, done.stdout + done.stderr
    same = total = 0
    for path in scenes:
        doc = json.loads((out / f"{path.name}.json").read_text())
        assert doc["model"] == str(openvino_dir) and doc["width"] == Image.open(path).width
        labels = np.asarray(Image.open(out / f"{path.name}.labels.png"))
        reference = densevlm.segment(student, path, default_vocabulary()).labels
        same += int((labels == reference).sum())
        total += reference.size
    assert same / total >= 0.99
    assert (out / f"{scenes[0].name}.overlay.png").is_file()


def test_cli_prompts_short_is_refused_for_an_export(openvino_dir, scenes, tmp_path):
    from densevlm.cli.main import main

    status = main(["segment", str(scenes[1]), "--model", str(openvino_dir), "--prompts", "short",
                   "--out", str(tmp_path / "seg"), "-q"])
    assert status == 2 and not (tmp_path / "seg" / f"{scenes[1].name}.json").exists()
