"""Narrowing a ViT tower by principal components: the hand-run dense path matches the backbone,
the narrow state dict fits the narrow architecture and computes nearly what the wide one does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from densevlm.errors import DenseVLMError
from densevlm.model import load_model
from densevlm.training.distill import student_from_teacher
from densevlm.training.distill_narrow import dense_path_trace, narrow_tower
from tests.conftest import perturb_


@pytest.fixture(scope="module")
def wide():
    model = load_model("tiny-vit-s")
    perturb_(model.backbone.clip, seed=5)
    return model.eval()


def _visual(model) -> dict[str, torch.Tensor]:
    return {k[len("visual."):]: v for k, v in model.backbone.clip.state_dict().items() if k.startswith("visual.")}


def _images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 8, 8, generator=g)  # smooth images: real-looking low-frequency content
    return F.interpolate(base, size=(64, 64), mode="bilinear", align_corners=False) * 4 - 2


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a, b, dim=1).mean())


def test_trace_reproduces_the_backbone_dense_path(wide):
    images = _images(3, 0)
    trace = dense_path_trace(_visual(wide), images, heads=4)
    with torch.no_grad():
        dense = wide.backbone.forward_image(images, pooled=False).dense
    assert torch.allclose(trace["dense"], dense.flatten(2).transpose(1, 2), atol=1e-5)
    assert len(trace["stream"]) == 3 and len(trace["head_out"]) == 1 and trace["head_out"][0].shape[0] == 4
    block = wide.backbone.clip.visual.transformer.resblocks[0]
    with torch.no_grad():  # the heads add up to block 0's attention output
        y = block.ln_1(trace["stream"][0].reshape(3, 65, 128))
        attn = block.attn(y, y, y, need_weights=False)[0].reshape(-1, 128)
    assert torch.allclose(trace["head_out"][0].sum(0) + block.attn.out_proj.bias, attn, atol=1e-5)


def test_narrow_tower_loads_and_follows_the_wide_tower(wide):
    teacher = load_model("tiny-vit")
    narrow = student_from_teacher(teacher, "tiny-vit-xs")  # random init: the baseline
    state = narrow_tower(_visual(wide), _images(64, 1), heads=4, width=64, head_width=32, mlp_ratio=4.0)
    held_out = _images(8, 2)
    with torch.no_grad():
        target = wide.encode_dense(held_out)
        random_cos = _cosine(narrow.encode_dense(held_out), target)
        narrow.backbone.clip.visual.load_state_dict(state, strict=True)
        narrowed_cos = _cosine(narrow.encode_dense(held_out), target)
    assert state["conv1.weight"].shape[0] == 64 and state["transformer.resblocks.0.mlp.c_fc.weight"].shape == (256, 64)
    assert narrowed_cos > random_cos + 0.3, (narrowed_cos, random_cos)


def test_narrow_stream_has_zero_channel_mean(wide):
    state = narrow_tower(_visual(wide), _images(32, 3), heads=4, width=64, head_width=32, mlp_ratio=4.0)
    ones = torch.ones(64)
    # every map writing the narrow stream writes orthogonally to the all-ones vector
    assert ones @ state["transformer.resblocks.0.attn.out_proj.weight"] == pytest.approx(torch.zeros(64), abs=1e-4)
    assert (ones @ state["transformer.resblocks.1.mlp.c_proj.weight"]).abs().max() < 1e-4


@pytest.mark.parametrize("width, head_width, words", [(128, 32, "below 128"), (48, 32, "multiple"),
                                                      (96, 16, "more heads")])
def test_impossible_widths_are_one_line_errors(wide, width, head_width, words):
    with pytest.raises(DenseVLMError, match=words):
        narrow_tower(_visual(wide), _images(4, 4), heads=4, width=width, head_width=head_width, mlp_ratio=4.0)
