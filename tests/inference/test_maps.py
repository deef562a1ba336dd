"""Pixel maps: chunked upsampling and argmax against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from densevlm.imaging import plan_letterbox
from densevlm.inference.maps import (bilinear_resize, block_weights, nearest_index, original_labels, original_scores,
                                     pixel_predictions)


def test_chunked_argmax_equals_unchunked():
    torch.manual_seed(0)
    dense = F.normalize(torch.randn(16, 7, 7), dim=0)
    text = F.normalize(torch.randn(11, 16), dim=1)
    plan = plan_letterbox(50, 36, 56, 8, square=True)
    assert (plan.width, plan.height, plan.input_width, plan.input_height) == (56, 40, 56, 56)
    whole = pixel_predictions(dense, text, 20.0, plan)
    chunked = pixel_predictions(dense, text, 20.0, plan, max_chunk_elements=3 * 56 * 56)  # 3 classes at a time
    up = F.interpolate(20.0 * torch.einsum("kc,chw->khw", text, dense)[None], size=(56, 56), mode="bilinear",
                       align_corners=False)[0][:, :40, :56]
    torch.testing.assert_close(whole[0], up.argmax(0), rtol=0, atol=0)
    torch.testing.assert_close(chunked[0], whole[0], rtol=0, atol=0)
    torch.testing.assert_close(chunked[1], up.softmax(0).max(0).values)


def test_original_maps_undo_an_integer_downscale():
    plan = plan_letterbox(112, 80, 56, 8, square=True)  # half size: each content pixel is a 2x2 block
    assert (plan.width, plan.height, plan.original_width, plan.original_height) == (56, 40, 112, 80)
    labels = torch.randint(0, 7, (40, 56), generator=torch.Generator().manual_seed(0)).numpy().astype("uint8")
    scores = torch.full((40, 56), 0.25)
    big_labels, big_scores = original_labels(labels, plan), original_scores(scores, plan)
    assert big_labels.dtype == labels.dtype and big_labels.flags["C_CONTIGUOUS"]
    assert (big_labels == labels.repeat(2, axis=0).repeat(2, axis=1)).all()
    assert big_scores.dtype == "float32" and big_scores.shape == (80, 112)
    assert abs(big_scores - 0.25).max() < 1e-6


def test_bilinear_resize_equals_torch_interpolate():

    from densevlm.inference.maps import bilinear_resize

    rng = np.random.default_rng(0)
    for (h, w), (oh, ow) in [((7, 5), (56, 40)), ((9, 13), (20, 7)), ((4, 4), (4, 4)), ((3, 8), (61, 33))]:
        x = rng.standard_normal((2, h, w)).astype(np.float32)
        ours = bilinear_resize(x, oh, ow)
        ref = F.interpolate(torch.from_numpy(x)[None], size=(oh, ow), mode="bilinear", align_corners=False)[0]
        np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-5, atol=1e-5)
        crop = bilinear_resize(x, oh, ow, rows=oh // 2, cols=ow - 1)
        np.testing.assert_allclose(crop, ref.numpy()[:, : oh // 2, : ow - 1], rtol=1e-5, atol=1e-5)


def test_numpy_and_torch_inputs_give_the_same_maps():
    torch.manual_seed(1)
    dense = F.normalize(torch.randn(16, 6, 8), dim=0)
    text = F.normalize(torch.randn(9, 16), dim=1)
    plan = plan_letterbox(60, 44, 64, 8, square=False)
    labels_t, probs_t = pixel_predictions(dense, text, 30.0, plan)
    labels_n, probs_n = pixel_predictions(dense.numpy(), text.numpy(), 30.0, plan)
    assert isinstance(labels_t, torch.Tensor) and not isinstance(labels_n, torch.Tensor)
    assert (labels_t.numpy() == labels_n).all()
    assert abs(probs_t.numpy() - probs_n).max() < 1e-6


def test_bilinear_resize_matches_the_one_line_formula_bit_for_bit_in_either_layout():

    from densevlm.inference.maps import bilinear_resize, bilinear_taps

    rng = np.random.default_rng(0)
    logits = (30 * rng.standard_normal((8, 8, 16), dtype=np.float32)).transpose(2, 0, 1)  # not C-contiguous
    for array, size, rows, cols in [(logits, (64, 64), 60, 50), (logits[0], (480, 640), None, None)]:
        r0, r1, rw = (t[: rows or size[0]] for t in bilinear_taps(size[0], array.shape[-2]))
        c0, c1, cw = (t[: cols or size[1]] for t in bilinear_taps(size[1], array.shape[-1]))
        tall = array[..., r0, :] * (1.0 - rw[:, None]) + array[..., r1, :] * rw[:, None]
        expected = tall[..., c0] * (1.0 - cw) + tall[..., c1] * cw
        got = bilinear_resize(array, *size, rows=rows, cols=cols)
        np.testing.assert_array_equal(got, expected)
        assert got.flags["C_CONTIGUOUS"]
        last = bilinear_resize(np.moveaxis(array, 0, -1) if array.ndim == 3 else array, *size, rows=rows, cols=cols,
                               channels_last=True)
        np.testing.assert_array_equal(np.moveaxis(last, -1, 0) if array.ndim == 3 else last, expected)


def test_resize_tables_are_cached_and_read_only():

    from densevlm.inference.maps import bilinear_taps, nearest_index

    assert nearest_index(480, 48) is nearest_index(480, 48)
    np.testing.assert_array_equal(nearest_index(480, 48), np.arange(480) // 10)
    with pytest.raises(ValueError):
        bilinear_taps(64, 8)[0][0] = 5


def test_a_nan_token_gives_class_0_and_nan_scores_whole_or_chunked():

    rng = np.random.default_rng(0)
    dense = rng.standard_normal((16, 7, 7)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=0)
    dense[:, 3, 4] = np.nan
    text = rng.standard_normal((11, 16)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    plan = plan_letterbox(56, 56, 56, 8, square=True)
    for chunk in (1 << 24, 3 * 56 * 56):
        arg, prob = pixel_predictions(dense, text, 20.0, plan, max_chunk_elements=chunk)
        nan = np.isnan(prob)
        assert nan[3 * 8 + 4, 4 * 8 + 4] and nan.sum() < nan.size // 4  # near the token only
        assert (arg[nan] == 0).all() and np.isfinite(prob[~nan]).all()


@pytest.mark.parametrize("n_out, n_in", [(480, 48), (97, 61), (64, 64), (7, 3)])
def test_block_weights_sum_the_upscale_over_each_nearest_block(n_out, n_in):
    rng = np.random.default_rng(n_out)
    x = rng.random((n_in, 5)).astype(np.float32)
    up = bilinear_resize(x, n_out, 5).astype(np.float64)  # rows upscaled, columns kept
    want = np.zeros((n_in, 5))
    np.add.at(want, nearest_index(n_out, n_in), up)
    np.testing.assert_allclose(block_weights(n_out, n_in) @ x.astype(np.float64), want, rtol=1e-6)
    assert not block_weights(n_out, n_in).flags.writeable
