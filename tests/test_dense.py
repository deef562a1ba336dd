"""Every runtime satisfies the DenseRuntime contract: the PyTorch model and an ONNX export."""

from __future__ import annotations

import types

import pytest
import torch
from PIL import Image

import densevlm
from densevlm.data.synth import generate_scene
from densevlm.dense import DenseRuntime, RuntimeSpec
from densevlm.model import OPEN_CLIP_DEFAULT_SIZE
from densevlm.regions import similarity
from densevlm.vocab import Vocabulary

VOCAB = Vocabulary.from_lists(["bolt", "scratch"], ["belt", "floor"])


@pytest.fixture(scope="module")
def tiny():
    return densevlm.load_model("tiny-student")


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from densevlm.export import export_onnx, load_onnx_model

    out = tmp_path_factory.mktemp("export") / "tiny"
    export_onnx(tiny, out, VOCAB, regions=False, parity=False, threads=1)
    return load_onnx_model(out, threads=1)


def _label_map(model: DenseRuntime, image: Image.Image) -> torch.Tensor:
    """Written against the protocol only (the module docstring's example)."""
    x, _ = model.prepare(image, model.default_size, square=True)
    text = model.embed_vocabulary(VOCAB)
    with torch.inference_mode():
        dense = model.encode_dense(x[None].to(text.device))[0]
    return similarity.logits(dense, text, model.logit_scale, dim=0).argmax(dim=0)


def test_pytorch_model_is_a_dense_runtime(tiny):
    assert isinstance(tiny, DenseRuntime) and isinstance(tiny.spec, RuntimeSpec)
    assert tiny.default_size == tiny.input_size == 64  # tiny models: their native size


def test_open_clip_models_default_to_448():
    model = densevlm.load_model("ViT-S-16")
    assert isinstance(model, DenseRuntime)
    assert model.default_size == OPEN_CLIP_DEFAULT_SIZE == 448 and model.input_size == 224


def test_onnx_export_is_a_dense_runtime(tiny, exported):
    assert isinstance(exported, DenseRuntime) and isinstance(exported.spec, RuntimeSpec)
    assert exported.default_size == exported.input_size == 64  # the export size
    image = Image.fromarray(generate_scene(0, 0, 64).image)
    labels_torch, labels_onnx = _label_map(tiny, image), _label_map(exported, image)
    assert labels_torch.shape == labels_onnx.shape == (8, 8) and labels_torch.unique().numel() > 2
    assert torch.equal(labels_torch, labels_onnx)


def test_a_missing_member_is_not_a_dense_runtime(tiny):
    members = ("spec", "patch_size", "input_size", "logit_scale", "prepare", "encode_dense", "embed_vocabulary")
    partial = types.SimpleNamespace(**{name: getattr(tiny, name) for name in members})
    assert not isinstance(partial, DenseRuntime)  # no default_size
    partial.default_size = 64
    assert isinstance(partial, DenseRuntime)
