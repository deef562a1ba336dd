"""Image statistics for drift monitoring, against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from densevlm.inspection.image_stats import image_statistics


def test_brightness_is_the_mean_luma_and_a_flat_image_has_no_sharpness():
    grey = np.full((8, 8, 3), 51, dtype=np.uint8)
    assert image_statistics(grey) == pytest.approx([0.2, 0.0])
    red = np.zeros((8, 8, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert image_statistics(Image.fromarray(red))[0] == pytest.approx(0.299)


def test_sharpness_is_the_variance_of_the_laplacian():
    # one white pixel in the middle of 5 x 5 black: interior Laplacian is -4 there, +1 at its 4 neighbours, 0 at the
    # 4 diagonal ones: 9 values, mean 0, variance (16 + 4) / 9
    img = np.zeros((5, 5, 3), dtype=np.uint8)
    img[2, 2] = 255
    assert image_statistics(img)[1] == pytest.approx(20 / 9)
    rng = np.random.default_rng(0)
    noise = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    y = noise.astype(np.float64) / 255 @ np.array([0.299, 0.587, 0.114])
    assert image_statistics(noise)[1] == pytest.approx(ndimage.laplace(y)[1:-1, 1:-1].var())
    blurred = ndimage.gaussian_filter(noise.astype(np.float64), sigma=(1.5, 1.5, 0)).astype(np.uint8)
    assert image_statistics(blurred)[1] < 0.1 * image_statistics(noise)[1]


def test_tiny_image_has_brightness_but_no_sharpness():
    assert image_statistics(np.full((2, 5, 3), 255, dtype=np.uint8)) == pytest.approx([1.0, 0.0])
