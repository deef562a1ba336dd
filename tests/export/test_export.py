"""ONNX export of a perturbed tiny-vit: parity with PyTorch, the runtime wrapper, broken exports.

One dynamic export is made per module (the tiny model exports in seconds) and shared; tests
that damage files work on a copy.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import densevlm
from densevlm.data.synth import default_vocabulary
from densevlm.errors import DenseVLMError
from densevlm.export import (
    TOLERANCES,
    check_export,
    check_parity,
    export_onnx,
    load_onnx_model,
    parity_inputs,
)
from densevlm.export.manifest import EMBEDDINGS_FILE, ENCODER_FILE, MANIFEST_FILE, REGION_FILE, sha256_file
from densevlm.regions.pooling import roi_pool
from densevlm.vocab import Vocabulary
from tests.conftest import perturb_


def _tiny(seed: int) -> densevlm.DenseModel:
    model = densevlm.load_model("tiny-vit")
    perturb_(model.backbone.clip, seed=seed)
    return model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return _tiny(seed=3)


@pytest.fixture(scope="module")
def export_dir(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny"
    export_onnx(model, out, default_vocabulary(), dynamic=True, threads=1, parity_images=2)
    return out


@pytest.fixture(scope="module")
def onnx_model(export_dir):
    return load_onnx_model(export_dir, threads=1)


def _one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message
    return message


def _dense(model, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.encode_dense(x)


def test_export_writes_files_and_manifest(export_dir, model):
    for name in (ENCODER_FILE, EMBEDDINGS_FILE, REGION_FILE, MANIFEST_FILE):
        assert (export_dir / name).is_file(), name
    manifest = json.loads((export_dir / MANIFEST_FILE).read_text())
    assert manifest["model"]["arch"] == "tiny-vit"
    assert manifest["model"]["patch_size"] == 8
    assert manifest["preprocess"]["mean"] == pytest.approx(list(model.spec.mean))
    assert manifest["export"]["dynamic"] is True
    assert manifest["export"]["opset"] == 18
    assert manifest["export"]["exporter"] in ("dynamo", "legacy")
    assert manifest["vocabulary"]["names"] == list(default_vocabulary().names)
    assert manifest["vocabulary"]["is_thing"] == list(default_vocabulary().is_thing)
    assert manifest["files"][ENCODER_FILE]["sha256"] == sha256_file(export_dir / ENCODER_FILE)
    assert manifest["files"][EMBEDDINGS_FILE]["sha256"] == sha256_file(export_dir / EMBEDDINGS_FILE)
    assert manifest["parity"]["passed"] is True
    assert [s["size"] for s in manifest["parity"]["sizes"]] == ["64x64", "64x96"]
    table = np.load(export_dir / EMBEDDINGS_FILE)
    assert table.dtype == np.float32 and table.shape == (16, 128)


def test_perturbed_tokens_are_distinct(model):
    """Guard for the parity tests below: a random CLIP's tokens are nearly identical, which would
    let a wrong graph pass. After perturbation they are not."""
    dense = _dense(model, torch.randn(1, 3, 64, 64))[0].flatten(1)
    cos = dense.t() @ dense
    off_diagonal = cos[~torch.eye(cos.shape[0], dtype=torch.bool)]
    assert float(off_diagonal.mean()) < 0.9


@pytest.mark.parametrize("shape", [(3, 3, 64, 64), (2, 3, 64, 96), (1, 3, 40, 24)])
def test_dense_map_matches_pytorch(model, onnx_model, shape):
    torch.manual_seed(1)
    x = torch.randn(*shape)
    ref = _dense(model, x)
    out = onnx_model.encode_dense(x)
    assert out.shape == ref.shape == (shape[0], 128, shape[2] // 8, shape[3] // 8)
    assert float((out - ref).abs().max()) <= TOLERANCES.max_abs
    text = model.embed_vocabulary(default_vocabulary())
    labels_ref = torch.einsum("bchw,kc->bkhw", ref, text).argmax(dim=1)
    labels_out = torch.einsum("bchw,kc->bkhw", out, onnx_model.embed_vocabulary(default_vocabulary())).argmax(dim=1)
    assert bool((labels_ref == labels_out).all())
    assert labels_ref.unique().numel() > 1


def test_check_parity_on_synthetic_scenes(model, onnx_model):
    groups, boxes = parity_inputs(onnx_model, count=2)
    assert [tuple(g.shape) for g in groups] == [(2, 3, 64, 64), (1, 3, 64, 96)]
    result = check_parity(model, onnx_model, groups, boxes)
    assert result["passed"], result["failures"]
    assert result["max_abs"] <= TOLERANCES.max_abs
    assert result["label_agreement"] >= TOLERANCES.label_agreement
    assert result["regions"]["boxes"] == sum(len(b) for g in boxes for b in g)
    json.dumps(result)


def test_check_parity_fails_for_other_weights(onnx_model):
    """The check can fail: a model with other weights is far outside every tolerance."""
    other = _tiny(seed=4)
    groups, boxes = parity_inputs(onnx_model, count=1)
    result = check_parity(other, onnx_model, groups, boxes)
    assert not result["passed"]
    assert any("max abs" in f for f in result["failures"])
    with pytest.raises(DenseVLMError) as e:
        check_export(other, onnx_model.directory)
    assert "other image-tower weights" in _one_line(e)


def test_runtime_interface_matches_dense_model(model, onnx_model):
    assert onnx_model.patch_size == model.patch_size
    assert onnx_model.input_size == 64 and onnx_model.image_size == model.image_size
    assert onnx_model.logit_scale == pytest.approx(model.logit_scale)
    assert onnx_model.spec.mean == pytest.approx(model.spec.mean)
    assert onnx_model.spec.arch == "tiny-vit" and onnx_model.device == torch.device("cpu")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 90, 3), dtype=np.uint8))
    x, plan = onnx_model.prepare(image)
    x_ref, plan_ref = model.prepare(image)
    assert plan == plan_ref and torch.equal(x, x_ref) and tuple(x.shape) == (3, 40, 64)
    assert torch.equal(onnx_model.transform(image), x_ref)
    boxes = [torch.tensor([[0.0, 0.0, 64.0, 40.0], [10.5, 3.0, 30.0, 33.0]])]
    with torch.inference_mode():
        ref = model.encode_boxes(x[None], boxes)
    out = onnx_model.encode_boxes(x[None], boxes)
    assert float((out - ref).abs().max()) <= TOLERANCES.max_abs


def test_embeddings_round_trip(model, onnx_model):
    vocab = default_vocabulary()
    stored = onnx_model.embed_vocabulary(vocab)
    assert stored.dtype == torch.float32
    assert torch.allclose(stored, model.embed_vocabulary(vocab), atol=1e-7, rtol=0)


def test_wrong_vocabulary_is_one_line_error(onnx_model):
    other = Vocabulary.from_lists(["bolt", "nut"], ["steel plate"])
    with pytest.raises(DenseVLMError) as e:
        onnx_model.embed_vocabulary(other)
    message = _one_line(e)
    assert "another vocabulary" in message and "densevlm export" in message and "--vocab" in message
    vocab = default_vocabulary()
    with pytest.raises(DenseVLMError):
        onnx_model.embed_vocabulary(vocab.extended("gasket", thing=True))


def test_region_classifier_matches_roi_pool(model, onnx_model):
    """Box scores of the exported RoI-align graph against torchvision's (aligned=True), on awkward
    boxes: sub-cell, off-grid, partly and wholly outside, zero width, the whole input."""
    torch.manual_seed(2)
    x = torch.randn(2, 3, 64, 96)
    dense = onnx_model.encode_dense(x)
    boxes = [
        torch.tensor([[0.0, 0.0, 96.0, 64.0], [3.3, 5.1, 4.1, 5.9], [-20.0, 10.0, 30.0, 90.0],
                      [50.0, 7.0, 50.0, 40.0]]),
        torch.tensor([[12.25, 31.5, 77.75, 40.0], [100.0, 70.0, 120.0, 90.0], [0.5, 0.5, 8.5, 8.5]]),
    ]
    logits = onnx_model.classify_boxes(dense, boxes)
    assert logits.shape == (7, 16)
    text = onnx_model.embed_vocabulary(default_vocabulary())
    expected = onnx_model.logit_scale * roi_pool(dense, boxes, 8) @ text.t()
    assert float((logits - expected).abs().max()) <= TOLERANCES.region_max_abs * onnx_model.logit_scale
    assert torch.equal(logits[:3].argmax(dim=1), expected[:3].argmax(dim=1))
    empty = onnx_model.classify_boxes(dense, [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert empty.shape == (0, 16)


def test_bad_input_shapes_are_one_line_errors(onnx_model):
    with pytest.raises(DenseVLMError) as e:
        onnx_model.encode_dense(torch.zeros(1, 3, 60, 64))
    assert "multiple of the patch size 8" in _one_line(e)
    with pytest.raises(DenseVLMError):
        onnx_model.encode_dense(torch.zeros(3, 64, 64))


def test_tampered_file_is_refused(export_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(export_dir, copy)
    path = copy / ENCODER_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DenseVLMError) as e:
        load_onnx_model(copy)
    message = _one_line(e)
    assert "sha256 mismatch" in message and str(path) in message


def test_missing_files_are_one_line_errors(export_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(export_dir, copy)
    (copy / EMBEDDINGS_FILE).unlink()
    with pytest.raises(DenseVLMError) as e:
        load_onnx_model(copy)
    assert "file missing" in _one_line(e) and EMBEDDINGS_FILE in str(e.value)
    (copy / MANIFEST_FILE).unlink()
    with pytest.raises(DenseVLMError) as e:
        load_onnx_model(copy)
    assert MANIFEST_FILE in _one_line(e)
    with pytest.raises(DenseVLMError) as e:
        load_onnx_model(tmp_path / "nowhere")
    assert "not found" in _one_line(e)
    (copy / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(DenseVLMError) as e:
        load_onnx_model(copy)
    assert "not a valid export manifest" in _one_line(e)


def test_size_must_be_a_multiple_of_the_patch(model, tmp_path):
    with pytest.raises(DenseVLMError) as e:
        export_onnx(model, tmp_path / "x", default_vocabulary(), size=60)
    assert "use 56 or 64" in _one_line(e)
    assert not (tmp_path / "x").exists()


@pytest.fixture
def no_dynamo(monkeypatch):
    """Make the new exporter fail, as it does for models torch.export cannot trace."""
    original = torch.onnx.export

    def export(*args, **kwargs):
        if kwargs.get("dynamo"):
            raise RuntimeError("simulated torch.export failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export)


def test_legacy_fallback_is_recorded_and_checked(model, tmp_path, no_dynamo):
    vocab = default_vocabulary()
    fixed = export_onnx(model, tmp_path, vocab, threads=1, parity_images=1)
    assert fixed["export"]["exporter"] == "legacy"
    assert "simulated torch.export failure" in fixed["export"]["fallback_reason"]
    assert fixed["parity"]["passed"], fixed["parity"]["failures"]
    assert fixed["parity"]["regions"]["top1_agreement"] == 1.0
    # The legacy exporter bakes the token count into nn.MultiheadAttention's reshapes: a dynamic
    # export only works at the traced size, and the check at a second size says so. Exporting
    # again into the same directory without regions removes the earlier region graph.
    dynamic = export_onnx(model, tmp_path, vocab, dynamic=True, threads=1, parity_images=2, regions=False)
    assert dynamic["parity"]["passed"] is False
    assert any(f.startswith("ONNX Runtime could not run 64x64") for f in dynamic["parity"]["failures"])
    assert not (tmp_path / REGION_FILE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ENCODER_FILE, EMBEDDINGS_FILE, MANIFEST_FILE])


def test_segment_with_the_onnx_engine_matches_torch(model, onnx_model):
    """`densevlm segment --engine onnx` and the PyTorch model give the same label map."""
    from densevlm.data.synth import generate_scene

    image = Image.fromarray(generate_scene(5, 0, 64).image)
    vocab = default_vocabulary()
    a = densevlm.segment(model, image, vocab)
    b = densevlm.segment(onnx_model, image, vocab)
    assert a.labels.shape == b.labels.shape == (64, 64)
    assert (a.labels == b.labels).mean() > 0.999
    assert [s.category for s in a.segments] == [s.category for s in b.segments]


def test_a_moved_calibration_folder_is_named_as_the_exports_own(tmp_path):
    from densevlm.export.build import gate_inputs

    record = {"source": str(tmp_path / "moved"), "heldout_names": ["a.png"]}
    with pytest.raises(DenseVLMError, match=r"moved: the calibration images recorded in the export cannot be opened "
                                            r"there any more; pass --calibration"):
        gate_inputs(None, record)
    with pytest.raises(DenseVLMError, match=r"no such file or folder"):  # a --calibration given: its own message
        gate_inputs(None, record, spec=str(tmp_path / "typo"))
