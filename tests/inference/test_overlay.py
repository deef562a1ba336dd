"""Overlay drawing: the whole-factor upscale made on the small map equals drawing the enlarged map."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from densevlm.inference.overlay import _enlarged_drawing, _inner_edges, _resize_labels, _tint, palette


def _reference(image: Image.Image, labels: np.ndarray, colours: np.ndarray, is_thing: np.ndarray, factor: int,
               thickness: int) -> np.ndarray:
    """Tint, enlarge (Pillow nearest), then outline the enlarged label map pixel by pixel."""
    height, width = labels.shape
    tinted = Image.fromarray(_tint(np.asarray(image), labels, colours, is_thing))
    pixels = np.array(tinted.resize((width * factor, height * factor), Image.NEAREST))
    lab = _resize_labels(labels, width * factor, height * factor)
    outline = _inner_edges(lab, thickness) & is_thing[lab]
    pixels[outline] = colours[lab[outline]]
    return pixels


@pytest.mark.parametrize("shape,factor,thickness", [((64, 64), 8, 2), ((48, 37), 11, 3), ((5, 9), 2, 2),
                                                     ((1, 30), 4, 4), ((30, 1), 3, 2)])
def test_enlarged_drawing_equals_outlining_the_enlarged_map(shape, factor, thickness):
    rng = np.random.default_rng(sum(shape) + factor)
    blocks = rng.integers(0, 6, (shape[0] // 4 + 1, shape[1] // 4 + 1))
    labels = np.kron(blocks, np.ones((4, 4), dtype=np.int64))[: shape[0], : shape[1]].astype(np.uint8)
    labels[rng.random(shape) < 0.1] = 5  # specks: one-pixel regions next to everything
    image = Image.fromarray(rng.integers(0, 256, shape + (3,), dtype=np.uint8))
    colours = palette(6)
    is_thing = np.array([True, False, True, False, True, True])
    got = np.asarray(_enlarged_drawing(image, labels, colours, is_thing, factor, thickness))
    expected = _reference(image, labels, colours, is_thing, factor, thickness)
    assert got.shape == expected.shape == (shape[0] * factor, shape[1] * factor, 3)
    np.testing.assert_array_equal(got, expected)
    assert (got == colours[0]).all(axis=-1).any()  # some outline was painted
