"""Cached overlay text against ImageDraw.text: the same pixels, lengths and boxes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from densevlm.data.synth import default_vocabulary
from densevlm.inference.glyphs import TextPainter, load_font, text_painter


def _overlay_strings() -> list[str]:
    """What an overlay of the embedded world writes: labels, legend lines, headings."""
    vocab = default_vocabulary()
    rng = np.random.default_rng(0)
    texts = ["legend", "+3 more", "+12 more"]
    for name, thing in zip(vocab.names, vocab.is_thing):
        texts += [f"{name} {score:.2f}" for score in rng.uniform(0, 1, 6)] + [f"{name} 0.49", f"{name} 1.00"]
        texts += [f"{name} ({'thing' if thing else 'stuff'}) {share:.1f}%" for share in rng.uniform(0, 100, 4)]
    return texts + ["fi fl ffi", "AVA To", "x", " ", "a b", "99.9%"]


@pytest.mark.parametrize("size", [12, 17, 28])
def test_text_painter_draws_measures_and_boxes_as_imagedraw(size):
    font = load_font(size)
    painter = TextPainter(font)
    split = 0
    for text in _overlay_strings():
        expected = Image.new("RGB", (420, 50), (200, 100, 50))
        got = np.array(expected)
        draw = ImageDraw.Draw(expected)
        draw.text((5, 7), text, fill=(0, 0, 0), font=font)
        painter.paint(got, (5, 7), text, (0, 0, 0))
        np.testing.assert_array_equal(got, np.asarray(expected), err_msg=repr(text))
        assert painter.length(text) == draw.textlength(text, font=font), text
        assert painter.bbox(text) == tuple(draw.textbbox((0, 0), text, font=font)), text
        split += bool(painter._pieces(text))
    assert split > 50  # the cached pieces were used, not only whole strings


def test_cached_pieces_draw_again_identically_and_at_the_image_edge():
    font = load_font(12)
    painter = text_painter(12)
    assert text_painter(12) is painter
    for xy in [(0, 0), (-4, -3), (60, 20)]:  # a text cut by the image border
        expected = Image.new("RGB", (70, 24), (255, 255, 255))
        got = np.array(expected)
        ImageDraw.Draw(expected).text(xy, "bolt 0.49", fill=(10, 20, 30), font=font)
        painter.paint(got, xy, "bolt 0.49", (10, 20, 30))
        np.testing.assert_array_equal(got, np.asarray(expected))
        assert (got != 255).any()
