"""Box and mask pooling on the dense map, and crops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

import densevlm
from densevlm.regions.pooling import crop_boxes, grid_token_weights, mask_pool, mask_token_weights, roi_pool
from tests.conftest import perturb_


@pytest.fixture(scope="module")
def tiny():
    model = densevlm.load_model("tiny-vit")
    perturb_(model.backbone.clip, seed=7)
    return model


def test_full_box_and_full_mask_give_mean_of_dense_map(tiny):
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        dense = tiny.encode_dense(x)
        boxes = [torch.tensor([[0.0, 0.0, 96.0, 64.0]]), torch.tensor([[0.0, 0.0, 96.0, 64.0]])]
        box_feats = tiny.encode_boxes(x, boxes)
        masks = [torch.ones(1, 64, 96, dtype=torch.bool), torch.ones(1, 64, 96, dtype=torch.bool)]
        mask_feats = tiny.encode_masks(x, masks)
    mean = F.normalize(dense.mean(dim=(2, 3)), dim=-1)
    assert torch.allclose(box_feats, mean, atol=1e-5)
    assert torch.allclose(mask_feats, mean, atol=1e-5)


def test_roi_pool_matches_direct_roi_align_call():
    dense = torch.randn(2, 5, 6, 7)
    boxes = [torch.tensor([[3.0, 5.0, 40.0, 30.0], [0.0, 0.0, 8.0, 8.0]]), torch.tensor([[10.0, 2.0, 55.0, 47.0]])]
    got = roi_pool(dense, boxes, stride=8)
    rois = torch.tensor([[0, 3 / 8, 5 / 8, 40 / 8, 30 / 8], [0, 0, 0, 1, 1], [1, 10 / 8, 2 / 8, 55 / 8, 47 / 8]])
    ref = roi_align(dense, rois, output_size=1, spatial_scale=1.0, sampling_ratio=-1, aligned=True).flatten(1)
    assert torch.allclose(got, F.normalize(ref, dim=-1), atol=1e-6)


def test_box_on_one_cell_returns_that_token():
    dense = torch.randn(1, 4, 4, 4)
    feats = roi_pool(dense, [torch.tensor([[16.0, 8.0, 24.0, 16.0]])], stride=8)  # cell row 1, col 2
    assert torch.allclose(feats[0], F.normalize(dense[0, :, 1, 2], dim=0), atol=1e-6)


def test_mask_pool_weights_tokens_by_covered_fraction():
    dense = torch.zeros(1, 2, 1, 2)
    dense[0, 0, 0, 0] = 1.0  # token (0,0) points along e0
    dense[0, 1, 0, 1] = 1.0  # token (0,1) points along e1
    mask = torch.zeros(1, 8, 16, dtype=torch.bool)
    mask[0, :, :8] = True  # all of token 0
    mask[0, :4, 8:] = True  # half of token 1
    feats = mask_pool(dense, [mask], stride=8)
    expected = F.normalize(torch.tensor([1.0, 0.5]), dim=0)
    assert torch.allclose(feats[0], expected, atol=1e-6)


def test_grid_token_weights_sum_each_pixel_into_its_token():
    g = torch.Generator().manual_seed(3)
    masks = torch.rand(2, 7, 5, generator=g, dtype=torch.float64)
    rows = torch.tensor([0, 0, 2, 2, 2, 1, 0])  # any pixel -> token map, not only strides
    cols = torch.tensor([1, 1, 0, 2, 2])
    expected = torch.zeros(2, 3, 4, dtype=torch.float64)
    for i in range(7):
        for j in range(5):
            expected[:, rows[i], cols[j]] += masks[:, i, j]
    assert torch.allclose(grid_token_weights(masks, rows, cols, (3, 4)), expected)
    # the stride form is the covered fraction of each cell
    square = torch.rand(3, 16, 8, generator=g) > 0.5
    assert torch.allclose(mask_token_weights(square, 4), F.avg_pool2d(square.float()[:, None], 4)[:, 0])


def test_mask_size_mismatch_is_clear():
    with pytest.raises(densevlm.DenseVLMError, match="does not match the input size"):
        mask_pool(torch.randn(1, 3, 4, 4), [torch.ones(1, 30, 32, dtype=torch.bool)], stride=8)


def test_empty_box_lists_and_counts(tiny):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = tiny.encode_boxes(x, [torch.zeros(0, 4), torch.tensor([[0.0, 0, 10, 10]])])
    assert feats.shape == (1, 128)
    with pytest.raises(densevlm.DenseVLMError, match="boxes for 1 images but 2"):
        tiny.encode_boxes(x, [torch.zeros(0, 4)])


def test_crop_boxes_letterboxes_and_keeps_content():
    image = torch.zeros(3, 40, 60)
    image[:, 10:20, 20:40] = 1.0
    crops = crop_boxes(image, torch.tensor([[20.0, 10.0, 40.0, 20.0]]), size=16)
    assert crops.shape == (1, 3, 16, 16)
    assert torch.allclose(crops[0, :, :8, :], torch.ones(3, 8, 16), atol=1e-5)  # 20x10 -> 16x8 content
    assert torch.count_nonzero(crops[0, :, 8:, :]) == 0  # padding


def test_encode_crops_pil_and_tensor_agree_for_native_images(tiny):
    from PIL import Image
    import numpy as np

    rng = np.random.default_rng(0)
    pil = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    boxes = torch.tensor([[0.0, 0.0, 32.0, 32.0], [16.0, 8.0, 64.0, 40.0]])
    with torch.no_grad():
        a = tiny.encode_crops(pil, boxes)
        b = tiny.encode_crops(tiny.transform(pil), boxes)
    assert a.shape == (2, 128)
    assert torch.allclose(a, b, atol=1e-5)
