"""Distillation to a smaller image tower: shared text side, initialisation, a loadable and
exportable checkpoint, resume, and refusing to overwrite a run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import densevlm
from densevlm.data.images import open_image_source
from densevlm.data.synth import default_vocabulary, write_world
from densevlm.errors import DenseVLMError
from densevlm.model import load_model
from densevlm.training.data import ContentDataset, model_batch
from densevlm.training.distill import DistillConfig, content_tokens, distill, student_from_teacher, teacher_block_map
from tests.conftest import perturb_


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    write_world(root / "images", 12, seed=41, progress=False)
    teacher = load_model("tiny-vit")
    perturb_(teacher.backbone.clip, seed=2)
    return {"images": str(root / "images"), "teacher": str(teacher.save(root / "teacher.pt"))}


def _cfg(world, out, **kw) -> DistillConfig:
    base = dict(teacher=world["teacher"], arch="tiny-vit-s", images=world["images"], out=str(out), steps=3,
                batch_size=4, log_every=1, save_every=2)
    return DistillConfig(**{**base, **kw})


def test_block_map_spreads_evenly_and_keeps_the_last():
    assert teacher_block_map(2, 4) == [0, 3]
    assert teacher_block_map(3, 12) == [0, 6, 11]
    assert teacher_block_map(1, 4) == [3]
    assert teacher_block_map(4, 4) == [0, 1, 2, 3]


def test_student_shares_the_teacher_text_side_and_starts_from_its_blocks(world):
    teacher = load_model(world["teacher"])
    student = student_from_teacher(teacher, "tiny-vit-s")
    t, s = teacher.backbone.clip.state_dict(), student.backbone.clip.state_dict()
    assert len(student.backbone.image_groups()["blocks"]) == 2 and student.embed_dim == teacher.embed_dim
    for k in t:
        if not k.startswith("visual.transformer.resblocks."):
            assert torch.equal(s[k], t[k]), k
    block = "visual.transformer.resblocks.{}.mlp.c_fc.weight"
    assert torch.equal(s[block.format(0)], t[block.format(0)])
    assert torch.equal(s[block.format(1)], t[block.format(3)])
    assert student.logit_scale == teacher.logit_scale
    vocab = default_vocabulary()
    assert torch.allclose(student.embed_vocabulary(vocab, use_cache=False), teacher.embed_vocabulary(vocab), atol=1e-6)
    trainable = {n for n, p in student.backbone.clip.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("visual.") for n in trainable)


def test_open_clip_teacher_and_unknown_arch_are_one_line_errors(world, tmp_path):
    with pytest.raises(DenseVLMError, match="tiny architectures only"):
        student_from_teacher(load_model("ViT-B-32"), "tiny-vit-s")
    with pytest.raises(DenseVLMError, match="--arch tiny-vit-x"):
        distill(_cfg(world, tmp_path / "r", arch="tiny-vit-x"), progress=False)
    assert not (tmp_path / "r").exists()


def test_content_tokens_cover_the_letterboxed_image_only():
    valid = content_tokens([torch.zeros(3, 64, 40, dtype=torch.uint8), torch.zeros(3, 17, 64, dtype=torch.uint8)],
                           (8, 8), 8)
    assert valid[0].sum() == 8 * 5 and valid[0, :, 5:].sum() == 0
    assert valid[1].sum() == 3 * 8 and valid[1, 3:].sum() == 0


def test_distilled_model_trains_saves_loads_segments_and_exports(world, tmp_path):
    result = distill(_cfg(world, tmp_path / "run"), progress=False)
    assert result.steps == 3 and np.isfinite(result.final_loss) and 0.0 <= result.agreement <= 1.0
    teacher = load_model(world["teacher"])
    start = student_from_teacher(teacher, "tiny-vit-s").backbone.clip.state_dict()
    model = densevlm.load_model(str(tmp_path / "run" / "last.pt"))
    saved = model.backbone.clip.state_dict()
    assert model.spec.arch == "tiny-vit-s" and model.spec.extra["distilled_from"].endswith("teacher.pt")
    key = "visual.transformer.resblocks.0.mlp.c_fc.weight"
    assert not torch.equal(saved[key], start[key])  # training moved the image tower
    assert torch.equal(saved["token_embedding.weight"], teacher.backbone.clip.state_dict()["token_embedding.weight"])
    vocab = default_vocabulary()
    image = open_image_source(world["images"]).load(0)
    seg = densevlm.segment(model, image, vocab)
    assert seg.labels.shape == (image.height, image.width) and int(seg.labels.max()) < len(vocab)
    from densevlm.export import export_onnx

    manifest = export_onnx(model, tmp_path / "export", vocab, dynamic=True, threads=1, parity_images=2)
    assert manifest["parity"]["passed"], manifest["parity"]["failures"]
    assert manifest["parity"]["label_agreement"] == 1.0


def test_resume_continues_exactly_where_it_stopped(world, tmp_path):
    distill(_cfg(world, tmp_path / "full", steps=4), progress=False)
    distill(_cfg(world, tmp_path / "cut", steps=2), progress=False)
    distill(_cfg(world, tmp_path / "cut", steps=4), resume=True, progress=False)
    full = torch.load(tmp_path / "full" / "state.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "state.pt", weights_only=True)
    assert cut["step"] == full["step"] == 4
    for k, v in full["model"].items():
        assert torch.allclose(cut["model"][k], v, atol=1e-6), k
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 4


def test_an_existing_run_is_refused_without_resume_or_overwrite(world, tmp_path):
    distill(_cfg(world, tmp_path / "run", steps=1), progress=False)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(DenseVLMError, match="--out"):
        distill(_cfg(world, tmp_path / "run", steps=1), progress=False)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    distill(_cfg(world, tmp_path / "run", steps=2), overwrite=True, progress=False)
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


def test_half_width_student_is_narrowed_from_the_teacher_blocks_given_images(world):
    teacher = load_model(world["teacher"])
    data = ContentDataset(open_image_source(world["images"]), teacher.input_size)
    images = model_batch(teacher, [data[i]["content"] for i in range(len(data))], teacher.input_size,
                         torch.device("cpu"))
    source = student_from_teacher(teacher, "tiny-vit-s")  # teacher blocks 0 and 3, full width
    narrowed = student_from_teacher(teacher, "tiny-vit-xs", images)
    random = student_from_teacher(teacher, "tiny-vit-xs")
    assert narrowed.backbone.clip.visual.conv1.weight.shape[0] == 64
    with torch.no_grad():
        target = source.encode_dense(images)
        cos = {name: float((m.encode_dense(images) * target).sum(1).mean()) for name, m in
               (("narrowed", narrowed), ("random", random))}
    assert cos["narrowed"] > cos["random"] + 0.3, cos


def test_half_width_student_from_a_distilled_init_trains_saves_loads_and_exports(world, tmp_path):
    distill(_cfg(world, tmp_path / "s", steps=2), progress=False)
    init = str(tmp_path / "s" / "last.pt")
    result = distill(_cfg(world, tmp_path / "xs", arch="tiny-vit-xs", init=init, steps=2), progress=False)
    assert result.steps == 2 and np.isfinite(result.final_loss)
    model = densevlm.load_model(str(tmp_path / "xs" / "last.pt"))
    assert model.spec.arch == "tiny-vit-xs" and model.backbone.clip.visual.conv1.weight.shape[0] == 64
    from densevlm.export import export_onnx

    manifest = export_onnx(model, tmp_path / "export", default_vocabulary(), dynamic=True, threads=1, parity_images=2)
    assert manifest["parity"]["passed"] and manifest["parity"]["label_agreement"] == 1.0
    with pytest.raises(DenseVLMError, match="--init"):  # the teacher has 4 blocks, tiny-vit-xs 2
        distill(_cfg(world, tmp_path / "bad", arch="tiny-vit-xs", init=world["teacher"]), progress=False)


def test_three_block_student_is_narrowed_from_a_six_block_wider_teacher(world):
    """tiny-vit-m from a tiny-vit-l teacher (random init, width 192): width 128, blocks 0, 2 and 5
    of the teacher narrowed by principal components, whose dense map is far nearer the teacher's
    than a randomly initialised tiny-vit-m's."""
    teacher = load_model("tiny-vit-l")
    data = ContentDataset(open_image_source(world["images"]), teacher.input_size)
    images = model_batch(teacher, [data[i]["content"] for i in range(len(data))], teacher.input_size,
                         torch.device("cpu"))
    narrowed = student_from_teacher(teacher, "tiny-vit-m", images)
    random = student_from_teacher(teacher, "tiny-vit-m")
    visual = narrowed.backbone.clip.visual
    assert visual.conv1.weight.shape[0] == 128 and len(visual.transformer.resblocks) == 3
    assert teacher_block_map(3, 6) == [0, 2, 5]
    with torch.no_grad():
        target = teacher.encode_dense(images)
        cos = {name: float((m.encode_dense(images) * target).sum(1).mean()) for name, m in
               (("narrowed", narrowed), ("random", random))}
    assert cos["narrowed"] > cos["random"] + 0.3, cos
