"""What :func:`densevlm.segment` returns: :class:`Segment`, :class:`SegmentResult` and the JSON schema.

``SegmentResult.to_json()`` is the document ``densevlm segment`` writes as ``NAME.json``; its
``"schema"`` field is :data:`SCHEMA`, which a later run reads back to skip finished images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image

from densevlm.errors import DenseVLMError
from densevlm.imaging import to_rgb
from densevlm.regions.rle import decode_rle
from densevlm.vocab import Vocabulary

__all__ = ["SCHEMA", "Segment", "SegmentResult"]

SCHEMA = "densevlm.segment/1"


@dataclass
class Segment:
    """One predicted segment.

    Attributes:
        id: 1-based, in order of decreasing area.
        category_index: index into the vocabulary.
        category: class name.
        isthing: thing (part, defect) or stuff (belt, floor).
        score: mean per-pixel score over the region, or the top-1 probability for a box.
        topk: ``[(category, probability)]`` best first, from the pooled region (or box) feature.
        bbox: ``(x1, y1, x2, y2)`` in original pixels, continuous (pixel ``i`` covers ``[i, i+1)``).
        area: number of original pixels in the mask.
        rle: COCO RLE of the ``[H, W]`` mask, ``{"size": [H, W], "counts": str}``.
        source: ``"region"`` (connected component) or ``"box"`` (a given box).
        anchor: ``(x, y)`` original pixel inside the mask, where the overlay puts the label.
    """

    id: int
    category_index: int
    category: str
    isthing: bool
    score: float
    topk: list[tuple[str, float]]
    bbox: tuple[float, float, float, float]
    area: int
    rle: dict[str, Any]
    source: str = "region"
    anchor: tuple[int, int] = (0, 0)

    def mask(self) -> np.ndarray:
        """``[H, W]`` bool mask decoded from :attr:`rle`."""
        return decode_rle(self.rle)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category,
            "category_index": self.category_index,
            "isthing": self.isthing,
            "score": self.score,
            "topk": [{"category": name, "prob": prob} for name, prob in self.topk],
            "bbox": [float(v) for v in self.bbox],
            "area": self.area,
            "mask": {"size": list(self.rle["size"]), "counts": self.rle["counts"]},
            "source": self.source,
        }



@dataclass
class SegmentResult:
    """Predictions for one image, at its original size.

    Attributes:
        labels: ``[H, W]`` class index per pixel (uint8 when K < 256, else uint16).
        scores: ``[H, W]`` float32 softmax probability of the pixel's class (a property; made
            on first read when the result was given a function for it, see ``score_map``).
        segments: regions (or boxes), largest first.
        vocab: the vocabulary the indices refer to.
        width, height: original image size in pixels (after EXIF orientation).
        model: model name for reports.
        input_size: longest side of the model input, in pixels.
        mode: ``"regions"`` or ``"boxes"``.
        min_area: regions smaller than this many original pixels were dropped.
        file: the image file, when segmented from a path.
        image: the image (possibly a downscaled copy) used by :meth:`overlay`.
        score_map: the ``scores`` array, or a function without arguments that makes it (the
            bilinear upscale of a photo's score map costs more than the rest of its
            post-processing, and ``densevlm segment`` never writes it).
    """

    labels: np.ndarray
    score_map: np.ndarray | Callable[[], np.ndarray] = field(repr=False, compare=False)
    segments: list[Segment]
    vocab: Vocabulary
    width: int
    height: int
    model: str = ""
    input_size: int = 0
    mode: str = "regions"
    min_area: int = 0
    file: Optional[str] = None
    image: Optional[Image.Image] = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        """One line: size, segment count, model, file and the three largest classes (not the arrays)."""
        top = ", ".join(f"{name} {share:.0%}" for name, share in self.class_areas()[:3])
        return (f"SegmentResult({self.width}x{self.height}, {len(self.segments)} segments ({self.mode}), "
                f"model={self.model!r}, file={self.file!r}, largest classes: {top})")

    @property
    def scores(self) -> np.ndarray:
        """``[H, W]`` float32 softmax probability of each pixel's class (see the class docstring)."""
        if callable(self.score_map):
            self.score_map = self.score_map()
        return self.score_map

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in original pixels."""
        return self.width, self.height

    def class_areas(self) -> list[tuple[str, float]]:
        """``[(class name, share of the image's pixels)]`` for the classes present, largest first."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.vocab))
        total = max(1, int(counts.sum()))
        order = np.argsort(-counts, kind="stable")
        return [(self.vocab.names[k], float(counts[k]) / total) for k in order if counts[k] > 0]

    def to_json(self) -> dict[str, Any]:
        """The JSON document written as ``NAME.json`` (see ``densevlm segment --help``)."""
        return {
            "schema": SCHEMA,
            "file": self.file,
            "width": self.width,
            "height": self.height,
            "model": self.model,
            "input_size": self.input_size,
            "mode": self.mode,
            "min_area": self.min_area,
            "vocabulary": {"names": list(self.vocab.names), "isthing": list(self.vocab.is_thing)},
            "class_areas": [{"category": name, "share": share} for name, share in self.class_areas()],
            "segments": [s.to_json() for s in self.segments],
        }

    def overlay(self, image: Optional[Image.Image] = None, max_side: int = 2048) -> Image.Image:
        """The image with stuff tinted, things outlined, labels and a legend panel on the right.

        Args:
            image: what to draw on (default: :attr:`image`); resized to the display size.
            max_side: longest side of the drawn image (larger images are downscaled; images
                under 512 px are upscaled by an integer factor so labels stay readable).
        """
        return Image.fromarray(self.overlay_pixels(image, max_side))

    def overlay_pixels(self, image: Optional[Image.Image] = None, max_side: int = 2048) -> np.ndarray:
        """:meth:`overlay` as ``[rows, columns, 3]`` uint8 pixels (what ``densevlm segment`` writes)."""
        from densevlm.inference.overlay import overlay_pixels

        base = image if image is not None else self.image
        if base is None:
            raise DenseVLMError("this result has no image to draw on; pass image= to overlay()")
        return overlay_pixels(to_rgb(base), self.labels, self.segments, self.vocab, max_side=max_side)
