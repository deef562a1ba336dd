"""Overlay drawing: stuff tinted, things outlined, labelled segments and a legend panel.

The drawing is made at a display size: images with a longest side over ``max_side`` are
downscaled, images under ``min_side`` are upscaled by a whole factor (nearest, so pixels stay
crisp), which keeps the labels of a 64 px image readable. Colours come from a fixed palette
indexed by class, so a class has the same colour in every overlay of a vocabulary.

An upscaled drawing is tinted at the original size and then enlarged (nearest): the same pixels
as tinting the enlarged image, at ``1 / factor^2`` of the work. When the outline is no thicker
than the factor, the outlines are found on the small map too (:func:`_block_outlines`) and the
enlarged picture is one ``np.where`` over 32-bit pixels. The picture, the label boxes, the text
(from the masks :mod:`densevlm.inference.glyphs` caches) and the legend are painted into one
canvas of 32-bit pixels, which Pillow unpacks to RGB once: a 64 px scene's overlay (512 px plus
the legend) costs about 3 ms, and what ``densevlm segment`` writes never becomes a PIL image.
"""

from __future__ import annotations

import colorsys
import math
from functools import lru_cache
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from densevlm.inference.glyphs import TextPainter, text_painter
from densevlm.vocab import Vocabulary

__all__ = ["palette", "display_size", "display_image", "overlay_pixels"]

# Twenty distinct colours (Sasha Trubetskoy's list); later classes get golden-ratio hues.
_BASE_COLOURS = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)
_STUFF_ALPHA = 0.45
_MAX_LABELS = 40
_MAX_LEGEND = 12
_MIN_SIDE = 512


def palette(num_classes: int) -> np.ndarray:
    """``[K, 3]`` uint8 RGB colour per class index (deterministic)."""
    colours = list(_BASE_COLOURS[:num_classes])
    golden = (math.sqrt(5) - 1) / 2
    for k in range(len(colours), num_classes):
        hue = (k * golden) % 1.0
        saturation = 0.55 + 0.4 * ((k // 7) % 2)
        value = 0.95 - 0.3 * ((k // 3) % 2)
        r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return np.array(colours, dtype=np.uint8).reshape(num_classes, 3)


def display_size(width: int, height: int, max_side: int = 2048, min_side: int = _MIN_SIDE) -> tuple[int, int]:
    """``(width, height)`` the overlay draws at (see the module docstring)."""
    longest = max(width, height)
    if longest > max_side:
        scale = max_side / longest
        return max(1, round(width * scale)), max(1, round(height * scale))
    if longest < min_side:
        factor = math.ceil(min_side / longest)
        return width * factor, height * factor
    return width, height


def display_image(image: Image.Image, max_side: int = 2048, min_side: int = _MIN_SIDE) -> Image.Image:
    """``image`` resized to its :func:`display_size` (nearest when upscaling, else bilinear)."""
    size = display_size(image.width, image.height, max_side, min_side)
    if size == image.size:
        return image
    if size[0] > image.width:
        return image.resize(size, Image.NEAREST)
    return image.resize(size, Image.BILINEAR, reducing_gap=2.0)


def _text_colour(rgb: Sequence[int]) -> tuple[int, int, int]:
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def _resize_labels(labels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize of a label map to ``[height, width]``."""
    if labels.shape == (height, width):
        return labels
    rows = np.minimum(((np.arange(height) + 0.5) * labels.shape[0] / height).astype(np.int64), labels.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * labels.shape[1] / width).astype(np.int64), labels.shape[1] - 1)
    return labels[rows][:, cols]


def _tint(pixels: np.ndarray, labels: np.ndarray, colours: np.ndarray, is_thing: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 pixels with every stuff pixel blended towards its class colour
    (weight ``_STUFF_ALPHA``, rounded to the nearest value); thing pixels are unchanged."""
    out = np.array(pixels, dtype=np.uint8)
    stuff = ~is_thing[labels]
    blend = (1 - _STUFF_ALPHA) * out[stuff].astype(np.float32) + _STUFF_ALPHA * colours[labels[stuff]]
    out[stuff] = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
    return out


def _inner_edges(labels: np.ndarray, thickness: int) -> np.ndarray:
    """``[H, W]`` True where a pixel is within ``thickness`` px of a pixel of another class."""
    edge = np.zeros(labels.shape, dtype=bool)
    for d in range(1, thickness + 1):
        edge[d:, :] |= labels[d:, :] != labels[:-d, :]
        edge[:-d, :] |= labels[:-d, :] != labels[d:, :]
        edge[:, d:] |= labels[:, d:] != labels[:, :-d]
        edge[:, :-d] |= labels[:, :-d] != labels[:, d:]
    return edge


@lru_cache(maxsize=64)
def _edge_blocks(factor: int, thickness: int) -> np.ndarray:
    """``[16, f, f]`` bool: the outline inside an enlarged pixel (``f x f`` block) for each code of
    :func:`_block_outlines` (bit 0: the pixel above differs, 1: below, 2: left, 3: right)."""
    offset = np.arange(factor)
    near_start, near_end = offset < thickness, offset >= factor - thickness
    table = np.zeros((16, factor, factor), dtype=bool)
    for code in range(16):
        table[code] |= near_start[:, None] if code & 1 else False
        table[code] |= near_end[:, None] if code & 2 else False
        table[code] |= near_start[None, :] if code & 4 else False
        table[code] |= near_end[None, :] if code & 8 else False
    return table


def _block_outlines(labels: np.ndarray, is_thing: np.ndarray, factor: int, thickness: int) -> np.ndarray:
    """:func:`_inner_edges` of ``labels`` enlarged ``factor`` times (nearest), on thing pixels only,
    as ``[H, f, W, f]`` (reshape to ``[H * f, W * f]``), computed on the small map; needs
    ``thickness <= factor``.

    In the enlarged map a pixel ``oy`` rows into its block meets the block above within
    ``thickness`` rows exactly when ``oy < thickness`` (and the block below when
    ``oy >= factor - thickness``; likewise for columns), so a block's outline depends only on
    which of its four neighbours differ: one of 16 ``f x f`` patterns (:func:`_edge_blocks`),
    looked up per small pixel.
    """
    h, w = labels.shape
    code = np.zeros((h, w), dtype=np.uint8)
    rows = (labels[1:] != labels[:-1]).view(np.uint8)
    cols = (labels[:, 1:] != labels[:, :-1]).view(np.uint8)
    code[1:] |= rows
    code[:-1] |= rows * np.uint8(2)
    code[:, 1:] |= cols * np.uint8(4)
    code[:, :-1] |= cols * np.uint8(8)
    code *= is_thing[labels]
    return _edge_blocks(factor, thickness)[code].transpose(0, 2, 1, 3)


def _words(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` uint8 RGB as ``[...]`` uint32, one pixel per word (RGBX bytes)."""
    out = np.zeros(rgb.shape[:-1] + (4,), dtype=np.uint8)
    out[..., :3] = rgb
    return out.view(np.uint32)[..., 0]


def _draw_enlarged(out: np.ndarray, image: Image.Image, labels: np.ndarray, colours: np.ndarray,
                   is_thing: np.ndarray, factor: int, thickness: int) -> None:
    """Fill ``out`` (``[H * f, W * f]`` 32-bit pixels, see :func:`_words`; a view into the canvas)
    with the drawing of a whole-factor upscale: stuff tinted at the original size, enlarged
    (nearest), thing edges painted; the same pixels as tinting and outlining the enlarged image,
    made from the small one (see :func:`_block_outlines`)."""
    height, width = labels.shape
    small = image if image.size == (width, height) else image.resize((width, height), Image.NEAREST)
    tinted = _words(_tint(np.asarray(small.convert("RGB")), labels, colours, is_thing))
    outline = _block_outlines(labels, is_thing, factor, thickness)
    np.copyto(out.reshape(height, factor, width, factor),
              np.where(outline, _words(colours)[labels][:, None, :, None], tinted[:, None, :, None]))


def _drawing(image: Image.Image, labels: np.ndarray, colours: np.ndarray, is_thing: np.ndarray,
             dw: int, dh: int, thickness: int) -> np.ndarray:
    """``[dh, dw, 3]`` uint8: the picture part of an overlay that is not a whole-factor upscale
    with outlines no thicker than the factor (stuff tinted, thing edges painted)."""
    height, width = labels.shape
    lab = _resize_labels(labels, dw, dh)
    if dw > width:  # a whole-factor upscale: tint at the original size, then enlarge
        small = image if image.size == (width, height) else image.resize((width, height), Image.NEAREST)
        tinted = Image.fromarray(_tint(np.asarray(small.convert("RGB")), labels, colours, is_thing))
        pixels = np.array(tinted.resize((dw, dh), Image.NEAREST))
    else:
        if image.size != (dw, dh):
            image = image.resize((dw, dh), Image.BILINEAR)
        pixels = _tint(np.asarray(image.convert("RGB")), lab, colours, is_thing)
    outline = _inner_edges(lab, thickness) & is_thing[lab]
    pixels[outline] = colours[lab[outline]]
    return pixels


def _fill(rgb: np.ndarray, x0: int, y0: int, x1: int, y1: int, colour: Sequence[int]) -> None:
    """``ImageDraw.rectangle([x0, y0, x1, y1], fill=colour)`` (corners inclusive, clipped) on ``[H, W, 3]``."""
    if x1 >= x0 and y1 >= y0 and x1 >= 0 and y1 >= 0:
        rgb[max(0, y0): y1 + 1, max(0, x0): x1 + 1] = colour


def _frame(rgb: np.ndarray, x0: int, y0: int, x1: int, y1: int, colour: Sequence[int], width: int) -> None:
    """``ImageDraw.rectangle([x0, y0, x1, y1], outline=colour, width=width)``: a border ``width`` px
    thick inside the corners (inclusive, clipped)."""
    _fill(rgb, x0, y0, x1, y0 + width - 1, colour)
    _fill(rgb, x0, y1 - width + 1, x1, y1, colour)
    _fill(rgb, x0, y0, x0 + width - 1, y1, colour)
    _fill(rgb, x1 - width + 1, y0, x1, y1, colour)


def _overlaps(box: tuple[int, int, int, int], placed: list[tuple[int, int, int, int]]) -> bool:
    return any(box[0] < p[2] and p[0] < box[2] and box[1] < p[3] and p[1] < box[3] for p in placed)


def overlay_pixels(
    image: Image.Image,
    labels: np.ndarray,
    segments: Sequence,
    vocab: Vocabulary,
    max_side: int = 2048,
    min_side: int = _MIN_SIDE,
) -> np.ndarray:
    """Draw predictions over ``image``, as pixels.

    Everything is painted into one canvas array, with the pixels ``ImageDraw`` would give
    (rectangles, text through :meth:`~densevlm.inference.glyphs.TextPainter.paint`); only box
    rectangles, whose corners may be fractional, are drawn by ``ImageDraw`` itself.
    ``tests/inference/test_overlay.py`` compares the result with drawing it through ``ImageDraw``.

    Args:
        image: RGB image (any size: it is resized to the display size of ``labels``).
        labels: ``[H, W]`` class index map at the original size.
        segments: :class:`~densevlm.inference.result.Segment` list (labels are drawn for the
            largest ones; box segments also get their rectangle).
        vocab: the vocabulary of ``labels``.

    Returns:
        ``[rows, columns, 3]`` uint8 RGB, C-contiguous, read-only: the display-size drawing (``rows`` is its
        height, or more when the legend needs it) with a legend panel on the right.
    """
    height, width = labels.shape
    dw, dh = display_size(width, height, max_side, min_side)
    colours = palette(len(vocab))
    is_thing = np.array(vocab.is_thing, dtype=bool)
    scale = dw / width
    font_size = int(min(28, max(12, max(dw, dh) / 40)))
    thickness = max(2, font_size // 7)
    factor = dw // width
    text = text_painter(font_size)
    legend = _Legend(labels, vocab, text, font_size, dh)
    canvas = np.empty((legend.height, dw + legend.width), dtype=np.uint32)
    rgb = canvas.view(np.uint8).reshape(canvas.shape + (4,))[..., :3]
    if dw > width and thickness <= factor:  # a whole-factor upscale, made on the small image
        _draw_enlarged(canvas[:dh, :dw], image, labels, colours, is_thing, factor, thickness)
    else:
        rgb[:dh, :dw] = _drawing(image, labels, colours, is_thing, dw, dh, thickness)
    canvas[dh:, :dw] = canvas[:, dw:] = _words(np.array([255, 255, 255], np.uint8))
    picture = rgb[:dh, :dw]
    boxes = [seg for seg in segments if seg.source == "box"]
    if boxes:
        drawn = Image.fromarray(np.ascontiguousarray(picture))
        draw = ImageDraw.Draw(drawn)
        for seg in boxes:
            x1, y1, x2, y2 = (v * scale for v in seg.bbox)
            colour = tuple(int(c) for c in colours[seg.category_index])
            draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=thickness)
        picture[...] = np.asarray(drawn)
    placed: list[tuple[int, int, int, int]] = []
    for seg in sorted(segments, key=lambda s: -s.area)[:_MAX_LABELS]:
        colour = tuple(int(c) for c in colours[seg.category_index])
        label = f"{seg.category} {seg.score:.2f}"
        left, top, right, bottom = text.bbox(label)
        tw, th = right - left + 6, bottom - top + 4
        ax = int(seg.anchor[0] * scale)
        ay = int(seg.anchor[1] * scale)
        if seg.source == "region":
            ax, ay = ax - tw // 2, ay - th // 2
        x = min(max(0, ax), max(0, dw - tw))
        y = min(max(0, ay), max(0, dh - th))
        box = (x, y, x + tw, y + th)
        if _overlaps(box, placed):
            continue
        placed.append(box)
        _fill(picture, x, y, x + tw - 1, y + th - 1, colour)
        _frame(picture, x, y, x + tw - 1, y + th - 1, (0, 0, 0), 1)
        text.paint(picture, (x + 3 - left, y + 2 - top), label, _text_colour(colour))
    legend.paint(rgb, dw, colours)
    # Pillow unpacks 32-bit pixels to RGB in one C loop, twice as fast as numpy's copy of the view
    return np.asarray(Image.frombytes("RGB", (canvas.shape[1], canvas.shape[0]), canvas, "raw", "RGBX"))


class _Legend:
    """The panel listing the classes present (swatch, name, thing/stuff, share of the original
    image's pixels), laid out for a drawing ``drawing_height`` px high."""

    def __init__(self, labels: np.ndarray, vocab: Vocabulary, text: TextPainter, font_size: int,
                 drawing_height: int):
        counts = np.bincount(labels.ravel(), minlength=len(vocab))
        order = [int(k) for k in np.argsort(-counts, kind="stable") if counts[k] > 0]
        total = max(1, int(counts.sum()))
        self.text, self.font_size, self.is_thing = text, font_size, vocab.is_thing
        self.row = font_size + max(4, font_size // 2)
        self.pad = max(6, font_size // 2)
        entries = [
            (k, f"{vocab.names[k]} ({'thing' if vocab.is_thing[k] else 'stuff'}) {100.0 * counts[k] / total:.1f}%")
            for k in order
        ]
        text_width = max([text.length(line) for _, line in entries] + [text.length("legend")])
        self.width = int(self.pad * 3 + font_size + text_width)
        # a short, wide image gets a taller canvas so that the legend still lists _MAX_LEGEND classes
        self.height = max(drawing_height, self.pad * 2 + self.row * (min(len(entries), _MAX_LEGEND) + 1))
        fit = max(1, (self.height - self.pad * 2) // self.row - 1)
        self.hidden = 0
        if len(entries) > fit:
            self.hidden = len(entries) - (fit - 1)
            entries = entries[: fit - 1]
        self.entries = entries

    def paint(self, rgb: np.ndarray, x: int, colours: np.ndarray) -> None:
        """Paint the panel into ``rgb`` (``[H, W, 3]``, white right of column ``x``)."""
        text, font_size, pad = self.text, self.font_size, self.pad
        x0 = x + pad
        y = pad
        text.paint(rgb, (x0, y), "legend", (0, 0, 0))
        y += self.row
        for k, line in self.entries:
            colour = tuple(int(c) for c in colours[k])
            if self.is_thing[k]:
                _frame(rgb, x0, y + 1, x0 + font_size, y + font_size, colour, max(2, font_size // 6))
            else:
                _fill(rgb, x0, y + 1, x0 + font_size, y + font_size, colour)
            text.paint(rgb, (x0 + font_size + pad, y), line, (0, 0, 0))
            y += self.row
        if self.hidden:
            text.paint(rgb, (x0, y), f"+{self.hidden} more", (80, 80, 80))
