"""Overlay text painted as Pillow draws it, from masks rendered once per font and text piece.

An overlay writes a dozen short strings per image (``"bolt 0.43"``, ``"belt (stuff) 12.5%"``) and
FreeType renders each of them from scratch in ``ImageDraw.text``; for a small image that is
about half of the overlay's time. :class:`TextPainter` splits a string into pieces (the part up
to its last space, then one character at a time), renders each piece once per font size, and
combines the cached piece masks into the string's mask.

Why the result is the string Pillow would draw, pixel for pixel: with the basic layout (what
``ImageFont.load_default`` gives), Pillow places every glyph at the pen position, advancing by
the glyph's hinted advance plus the pair's kerning, and merges overlapping glyphs by the
maximum of their masks (``font_render`` in ``_imagingft.c``). When every piece's advance is a
whole number of pixels and no kerning crosses a piece boundary, each glyph's bitmap is the same
wherever it is drawn, so the maximum of the pieces' masks, each shifted by the advance of the
pieces before it, is the string's mask. :meth:`TextPainter.paint` blends it into a pixel array
with the arithmetic ``ImageDraw.text`` blends its own mask with (``ImageDraw.bitmap``'s), and
keeps each string's mask and blend weights (labels, scores and legend lines repeat from image to
image). A string that fails either condition (or a font with another layout engine) is rendered
whole, and also cached. ``tests/inference/test_glyphs.py`` compares both against
``ImageDraw.text`` on every string an overlay of the embedded world draws.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["load_font", "TextPainter", "text_painter"]

# entries per cache before it is emptied (strings that cannot be split are cached whole)
_MAX_ENTRIES = 4096

Font = Union[ImageFont.ImageFont, ImageFont.FreeTypeFont]


def load_font(size: int) -> Font:
    """Pillow's built-in font at ``size`` px (its bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


class TextPainter:
    """Paints, measures and boxes text in one font as ``ImageDraw`` would (see the module docstring).

    Safe to share between threads (a lock guards the font and the caches). Attributes:
        font: the font (use it for anything this class does not cover).
    """

    def __init__(self, font: Font):
        self.font = font
        self._lock = threading.Lock()
        self._split = isinstance(font, ImageFont.FreeTypeFont) and font.layout_engine == ImageFont.Layout.BASIC
        self._measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        self._boxes: dict[str, tuple[int, int, int, int]] = {}
        self._masks: dict[str, tuple[np.ndarray, int, int]] = {}
        self._lengths: dict[str, float] = {}
        self._weights: dict[str, tuple[np.ndarray, np.ndarray, int, int]] = {}
        self._totals: dict[str, float] = {}

    def bbox(self, text: str) -> tuple[int, int, int, int]:
        """``ImageDraw.textbbox((0, 0), text, font)``: ``(left, top, right, bottom)`` in pixels."""
        with self._lock:
            box = self._boxes.get(text)
            if box is None:
                _bound(self._boxes)
                box = self._boxes[text] = tuple(int(v) for v in self._measure.textbbox((0, 0), text, font=self.font))
            return box

    def length(self, text: str) -> float:
        """``ImageDraw.textlength(text, font)``: the pen advance of ``text`` in pixels."""
        with self._lock:
            total = self._totals.get(text)
            if total is None:
                pieces = self._pieces(text)
                _bound(self._totals)
                total = self._totals[text] = sum(self._length(p) for p in pieces) if pieces else self._length(text)
            return total

    def paint(self, rgb: np.ndarray, xy: tuple[int, int], text: str, fill: tuple[int, int, int]) -> None:
        """``ImageDraw.Draw(image).text(xy, text, fill=fill, font=self.font)`` for whole-pixel ``xy``,
        on ``[H, W, 3]`` uint8 RGB pixels in place (any strides, e.g. a view into a canvas).

        The string's mask is blended as ``ImageDraw.bitmap`` (what ``ImageDraw.text`` ends in)
        blends it: ``fill_mask_L`` in Pillow's ``Paste.c``, ``(out * (255 - m) + ink * m) / 255``
        rounded by its ``DIV255``; clipped to the array. A font that cannot be split is drawn by
        ``ImageDraw.text`` on a copy."""
        if not self._split:
            drawn = Image.fromarray(np.ascontiguousarray(rgb))
            ImageDraw.Draw(drawn).text(xy, text, fill=fill, font=self.font)
            rgb[...] = np.asarray(drawn)
            return
        with self._lock:
            weights = self._weights.get(text)
            if weights is None:
                mask, left, top = self._mask(text)
                m = mask[:, :, None].astype(np.uint32)
                _bound(self._weights)
                weights = self._weights[text] = (m, 255 - m, left, top)
        m, keep, left, top = weights
        x, y = int(xy[0]) + left, int(xy[1]) + top
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + m.shape[1], rgb.shape[1]), min(y + m.shape[0], rgb.shape[0])
        if x1 <= x0 or y1 <= y0:
            return
        crop = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
        region = rgb[y0:y1, x0:x1]
        blend = region * keep[crop] + m[crop] * np.asarray(fill, np.uint32) + 128
        region[...] = (blend + (blend >> 8)) >> 8

    def _length(self, piece: str) -> float:
        value = self._lengths.get(piece)
        if value is None:
            _bound(self._lengths)
            value = self._lengths[piece] = float(self._measure.textlength(piece, font=self.font))
        return value

    def _pieces(self, text: str) -> list[str]:
        """``text`` cut where merging piece masks is exact (see the module docstring); [] to draw it whole.

        The candidate cuts are after the last space and between the characters after it; two
        neighbours whose inked columns would overlap (``4`` reaching into ``9``) stay one piece.
        """
        if not self._split or len(text) < 2:
            return []
        head = text.rfind(" ") + 1
        cuts = ([text[:head]] if head else []) + list(text[head:])
        pieces: list[str] = []
        for piece in cuts:
            if pieces and self._overlap(pieces[-1], piece):
                pieces[-1] += piece
            else:
                pieces.append(piece)
        if len(pieces) < 2 or not all(self._length(p).is_integer() for p in pieces):
            return []
        for before, after in zip(pieces, pieces[1:]):
            if self._length(before + after) != self._length(before) + self._length(after):
                return []  # kerning across the cut
        return pieces

    def _overlap(self, before: str, after: str) -> bool:
        """Whether ``after``'s ink starts left of where ``before``'s ends when drawn after it."""
        mask, left, _ = self._piece_mask(before)
        next_mask, next_left, _ = self._piece_mask(after)
        if not mask.size or not next_mask.size:
            return False
        return self._length(before) + next_left < left + mask.shape[1]

    def _piece_mask(self, piece: str) -> tuple[np.ndarray, int, int]:
        """``(mask [h, w] uint8, left, top)`` of ``piece`` drawn at the origin, as Pillow renders it."""
        cached = self._masks.get(piece)
        if cached is None:
            core, (left, top) = self.font.getmask2(piece, "L")
            width, height = core.size
            mask = np.asarray(Image.frombytes("L", (width, height), bytes(core))) if width and height else \
                np.zeros((0, 0), np.uint8)
            _bound(self._masks)
            cached = self._masks[piece] = (mask, int(left), int(top))
        return cached

    def _mask(self, text: str) -> tuple[np.ndarray, int, int]:
        """The whole string's ``(mask, left, top)``, merged from its pieces where that is exact
        (:meth:`paint` keeps what it derives from it per string)."""
        pieces = self._pieces(text)
        if not pieces:
            return self._piece_mask(text)
        placed, pen = [], 0.0
        for piece in pieces:
            mask, left, top = self._piece_mask(piece)
            if mask.size:
                placed.append((mask, int(pen) + left, top))
            pen += self._length(piece)
        if not placed:
            return np.zeros((0, 0), np.uint8), 0, 0
        x0 = min(x for _, x, _ in placed)
        y0 = min(y for _, _, y in placed)
        x1 = max(x + m.shape[1] for m, x, _ in placed)
        y1 = max(y + m.shape[0] for m, _, y in placed)
        out = np.zeros((y1 - y0, x1 - x0), np.uint8)
        for mask, x, y in placed:
            region = out[y - y0: y - y0 + mask.shape[0], x - x0: x - x0 + mask.shape[1]]
            np.maximum(region, mask, out=region)
        return out, x0, y0


def _bound(cache: dict) -> None:
    if len(cache) >= _MAX_ENTRIES:
        cache.clear()


@lru_cache(maxsize=32)
def text_painter(size: int) -> TextPainter:
    """The shared :class:`TextPainter` of :func:`load_font` at ``size`` px (one per size per process)."""
    return TextPainter(load_font(size))
