"""Overlay drawing: the whole-factor upscale made on the small map equals drawing the enlarged map, and the
whole overlay, painted into one array, equals drawing it with ImageDraw (tint, outlines, boxes, labels, legend)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from densevlm.inference.glyphs import load_font
from densevlm.inference.overlay import (_MAX_LABELS, _MAX_LEGEND, _draw_enlarged, _inner_edges, _resize_labels, _text_colour,
                                        _tint, display_size, overlay_pixels, palette)
from densevlm.inference.result import Segment
from densevlm.vocab import Vocabulary


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
    words = np.zeros((shape[0] * factor, shape[1] * factor + 3), np.uint32)[:, 1:-2]  # a view, as into a canvas
    _draw_enlarged(words, image, labels, colours, is_thing, factor, thickness)
    got = words.view(np.uint8).reshape(words.shape + (4,))[..., :3]
    expected = _reference(image, labels, colours, is_thing, factor, thickness)
    assert got.shape == expected.shape == (shape[0] * factor, shape[1] * factor, 3)
    np.testing.assert_array_equal(got, expected)
    assert (got == colours[0]).all(axis=-1).any()  # some outline was painted


def _imagedraw_overlay(image: Image.Image, labels: np.ndarray, segments: list, vocab: Vocabulary) -> np.ndarray:
    """The overlay drawn the plain way: tint and outline the display-size map pixel by pixel, then
    ``ImageDraw`` rectangles and ``ImageDraw.text`` on a Pillow canvas with a legend panel."""
    height, width = labels.shape
    dw, dh = display_size(width, height)
    colours, is_thing = palette(len(vocab)), np.array(vocab.is_thing)
    scale = dw / width
    font_size = int(min(28, max(12, max(dw, dh) / 40)))
    thickness = max(2, font_size // 7)
    font = load_font(font_size)
    lab = _resize_labels(labels, dw, dh)
    if dw > width:
        pixels = np.array(Image.fromarray(_tint(np.asarray(image), labels, colours, is_thing)).resize((dw, dh), Image.NEAREST))
    else:
        pixels = _tint(np.asarray(image.resize((dw, dh), Image.BILINEAR) if image.size != (dw, dh) else image),
                       lab, colours, is_thing)
    outline = _inner_edges(lab, thickness) & is_thing[lab]
    pixels[outline] = colours[lab[outline]]
    drawing = Image.fromarray(pixels)
    draw = ImageDraw.Draw(drawing)
    for seg in segments:
        if seg.source == "box":
            x1, y1, x2, y2 = (v * scale for v in seg.bbox)
            draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=tuple(int(c) for c in colours[seg.category_index]),
                           width=thickness)
    placed = []
    for seg in sorted(segments, key=lambda s: -s.area)[:_MAX_LABELS]:
        colour = tuple(int(c) for c in colours[seg.category_index])
        label = f"{seg.category} {seg.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tw, th = right - left + 6, bottom - top + 4
        ax, ay = int(seg.anchor[0] * scale), int(seg.anchor[1] * scale)
        if seg.source == "region":
            ax, ay = ax - tw // 2, ay - th // 2
        x, y = min(max(0, ax), max(0, dw - tw)), min(max(0, ay), max(0, dh - th))
        if any(x < p[2] and p[0] < x + tw and y < p[3] and p[1] < y + th for p in placed):
            continue
        placed.append((x, y, x + tw, y + th))
        draw.rectangle([x, y, x + tw - 1, y + th - 1], fill=colour, outline=(0, 0, 0))
        draw.text((x + 3 - left, y + 2 - top), label, fill=_text_colour(colour), font=font)
    counts = np.bincount(labels.ravel(), minlength=len(vocab))
    order = [int(k) for k in np.argsort(-counts, kind="stable") if counts[k] > 0]
    row, pad = font_size + max(4, font_size // 2), max(6, font_size // 2)
    entries = [(k, f"{vocab.names[k]} ({'thing' if vocab.is_thing[k] else 'stuff'}) {100.0 * counts[k] / counts.sum():.1f}%")
               for k in order]
    text_width = max([draw.textlength(line, font=font) for _, line in entries] + [draw.textlength("legend", font=font)])
    canvas_height = max(dh, pad * 2 + row * (min(len(entries), _MAX_LEGEND) + 1))
    fit = max(1, (canvas_height - pad * 2) // row - 1)
    hidden = len(entries) - (fit - 1) if len(entries) > fit else 0
    entries = entries[: fit - 1] if hidden else entries
    canvas = Image.new("RGB", (dw + int(pad * 3 + font_size + text_width), canvas_height), (255, 255, 255))
    canvas.paste(drawing, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x0, y = dw + pad, pad
    draw.text((x0, y), "legend", fill=(0, 0, 0), font=font)
    for k, line in entries:
        y += row
        colour = tuple(int(c) for c in colours[k])
        swatch = [x0, y + 1, x0 + font_size, y + font_size]
        if vocab.is_thing[k]:
            draw.rectangle(swatch, outline=colour, width=max(2, font_size // 6))
        else:
            draw.rectangle(swatch, fill=colour)
        draw.text((x0 + font_size + pad, y), line, fill=(0, 0, 0), font=font)
    if hidden:
        draw.text((x0, y + row), f"+{hidden} more", fill=(80, 80, 80), font=font)
    return np.asarray(canvas)


def _scene(rng: np.random.Generator, shape: tuple[int, int], classes: int, boxes: bool) -> tuple:
    """A random image, a blocky label map with specks, its vocabulary and segments at random anchors."""
    names = [f"class{k}" for k in range(classes)]
    vocab = Vocabulary(names=tuple(names), synonyms=tuple((n,) for n in names),
                       is_thing=tuple(k < classes // 2 for k in range(classes)))
    blocks = rng.integers(0, classes, (shape[0] // 6 + 1, shape[1] // 6 + 1))
    labels = np.kron(blocks, np.ones((6, 6), dtype=np.int64))[: shape[0], : shape[1]].astype(np.uint8)
    labels[rng.random(shape) < 0.02] = classes - 1
    image = Image.fromarray(rng.integers(0, 256, shape + (3,), dtype=np.uint8))
    segments = []
    for i in range(30):
        k = int(rng.integers(classes))
        x1, y1 = rng.uniform(0, shape[1]), rng.uniform(0, shape[0])
        bbox = (x1, y1, min(shape[1], x1 + rng.uniform(0.5, shape[1] / 2)), min(shape[0], y1 + rng.uniform(0.5, shape[0] / 2)))
        segments.append(Segment(id=i + 1, category_index=k, category=names[k], isthing=vocab.is_thing[k],
                                score=float(rng.random()), topk=[], bbox=bbox, area=int(rng.integers(1, 500)), rle={},
                                source="box" if boxes and i % 2 else "region",
                                anchor=(int(rng.integers(shape[1])), int(rng.integers(shape[0])))))
    return image, labels, vocab, segments


@pytest.mark.parametrize("shape,classes,boxes", [((64, 64), 8, False), ((64, 64), 8, True), ((40, 300), 30, False),
                                                 ((7, 90), 3, True), ((480, 640), 12, True), ((700, 3000), 5, False),
                                                 ((130, 97), 1, False)])
def test_overlay_equals_drawing_it_with_imagedraw(shape, classes, boxes):
    rng = np.random.default_rng(shape[0] * 7 + classes)
    image, labels, vocab, segments = _scene(rng, shape, classes, boxes)
    got = overlay_pixels(image, labels, segments, vocab)
    expected = _imagedraw_overlay(image, labels, segments, vocab)
    assert got.flags.c_contiguous and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    colours = palette(classes)
    for k in np.unique(labels):  # every class present is shown in its colour (tint, outline or swatch)
        assert (got == colours[k]).all(axis=-1).any() or not vocab.is_thing[k]
    assert (got[:, :, :] == 0).all(axis=-1).any()  # black text or frames were drawn
