"""encode_dense / encode_image against direct computations from each model's own modules."""

from __future__ import annotations

import pytest
import torch

import densevlm
from densevlm.backbones.vit import resize_pos_embed
from tests.conftest import perturb_


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _self_only_mask(n: int) -> torch.Tensor:
    mask = torch.full((n, n), float("-inf"))
    mask.fill_diagonal_(0.0)
    return mask


@pytest.fixture(scope="module")
def vit_b16():
    model = densevlm.load_model("ViT-B-16")
    perturb_(model.backbone.clip, seed=1)
    return model


@pytest.fixture(scope="module")
def eva_b16():
    model = densevlm.load_model("EVA02-B-16")
    perturb_(model.backbone.clip, seed=2)
    return model


def test_vit_dense_equals_self_attention_last_block(vit_b16):
    """The value path is attention where each token sees only itself: compute it with the
    block's own nn.MultiheadAttention and a diagonal mask, through open_clip's own embedding."""
    visual = vit_b16.backbone.clip.visual
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        got = vit_b16.encode_dense(x)
        tokens = visual._embeds(x)
        for block in visual.transformer.resblocks[:-1]:
            tokens = block(tokens)
        last = visual.transformer.resblocks[-1]
        tokens = last(tokens, attn_mask=_self_only_mask(tokens.shape[1]))
        ref = visual.ln_post(tokens)[:, 1:] @ visual.proj
        ref = torch.nn.functional.normalize(ref, dim=-1).transpose(1, 2).reshape(2, -1, 14, 14)
    assert got.shape == (2, 512, 14, 14)
    assert _rel(got, ref) < 1e-5
    assert torch.allclose(got.norm(dim=1), torch.ones(2, 14, 14), atol=1e-5)


def test_vit_value_path_differs_from_full_attention(vit_b16):
    visual = vit_b16.backbone.clip.visual
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        got = vit_b16.encode_dense(x)
        tokens = visual._embeds(x)
        for block in visual.transformer.resblocks:
            tokens = block(tokens)
        full = visual.ln_post(tokens)[:, 1:] @ visual.proj
        full = torch.nn.functional.normalize(full, dim=-1).transpose(1, 2).reshape(1, -1, 14, 14)
    assert _rel(got, full) > 1e-3


def test_vit_global_equals_open_clip_encode_image(vit_b16):
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        got = vit_b16.encode_image(x)
        ref = torch.nn.functional.normalize(vit_b16.backbone.clip.encode_image(x), dim=-1)
    assert _rel(got, ref) < 1e-5


def test_eva_dense_equals_self_attention_last_block(eva_b16):
    trunk = eva_b16.backbone.clip.visual.trunk
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        got = eva_b16.encode_dense(x)
        tokens = trunk.patch_embed(x)
        tokens, rope = trunk._pos_embed(tokens)
        tokens = trunk.norm_pre(tokens)
        for block in trunk.blocks[:-1]:
            tokens = block(tokens, rope=rope)
        n = tokens.shape[1]
        tokens = trunk.blocks[-1](tokens, rope=rope, attn_mask=_self_only_mask(n))
        ref = trunk.head(trunk.norm(tokens)[:, 1:])
        ref = torch.nn.functional.normalize(ref, dim=-1).transpose(1, 2).reshape(2, -1, 14, 14)
    assert got.shape == (2, 512, 14, 14)
    assert _rel(got, ref) < 1e-5


def test_eva_global_equals_open_clip_encode_image(eva_b16):
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        got = eva_b16.encode_image(x)
        ref = torch.nn.functional.normalize(eva_b16.backbone.clip.encode_image(x), dim=-1)
    assert _rel(got, ref) < 1e-5


@pytest.mark.parametrize("fixture", ["vit_b16", "eva_b16"])
def test_non_native_size_shapes(fixture, request):
    model = request.getfixturevalue(fixture)
    with torch.no_grad():
        dense = model.encode_dense(torch.randn(1, 3, 224, 320))
        pooled = model.encode_image(torch.randn(1, 3, 320, 224))
        dense2 = model.encode_dense(torch.randn(1, 3, 96, 64))  # smaller than native, same model
    assert dense.shape == (1, 512, 14, 20)
    assert pooled.shape == (1, 512)
    assert dense2.shape == (1, 512, 6, 4)
    assert torch.isfinite(dense).all() and torch.isfinite(dense2).all()


def test_input_not_multiple_of_patch_is_one_line_error(vit_b16):
    with pytest.raises(densevlm.DenseVLMError, match="multiple of the patch size 16"):
        vit_b16.encode_dense(torch.randn(1, 3, 224, 230))


def test_resize_pos_embed_identity_and_interpolation():
    pos = torch.randn(1 + 4 * 4, 8)
    assert resize_pos_embed(pos, (4, 4), (4, 4)) is pos
    out = resize_pos_embed(pos, (4, 4), (8, 6))
    assert out.shape == (1 + 48, 8)
    assert torch.equal(out[0], pos[0])
    # a constant table stays constant under bicubic resizing
    const = torch.ones(17, 3)
    assert torch.allclose(resize_pos_embed(const, (4, 4), (7, 9)), torch.ones(64, 3), atol=1e-6)


def test_tiny_dense_and_text():
    model = densevlm.load_model("tiny-vit")
    perturb_(model.backbone.clip)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        dense = model.encode_dense(x)
        text = model.encode_text(["a bolt on a steel plate", "a nut"])
    assert dense.shape == (3, 128, 8, 8)
    assert text.shape == (2, 128)
    assert torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_encoders_carry_gradients_in_train_mode():
    model = densevlm.load_model("tiny-vit")
    model.train()
    feats = model.encode_boxes(torch.randn(2, 3, 64, 64), [torch.tensor([[0.0, 0, 32, 32]]), torch.tensor([[8.0, 8, 64, 40]])])
    feats.sum().backward()
    grads = [p.grad for p in model.backbone.clip.visual.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_eva_value_path_differs_from_full_attention(eva_b16):
    trunk = eva_b16.backbone.clip.visual.trunk
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        got = eva_b16.encode_dense(x)
        tokens = trunk.forward_features(x)
        full = torch.nn.functional.normalize(trunk.head(tokens[:, 1:]), dim=-1).transpose(1, 2).reshape(1, -1, 14, 14)
    assert _rel(got, full) > 1e-3
