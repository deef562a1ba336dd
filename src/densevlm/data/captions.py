"""(image, caption) batches for contrastive pretraining, drawn as a pure function of the step.

Batch ``t`` of a source with seed ``s`` is drawn from ``numpy.random.default_rng([s, t])``, so
a run resumed at step ``t`` sees exactly the batches an uninterrupted run would.

Two sources:

* :class:`PanopticCaptionSource` -- a panoptic directory with ground truth (the embedded
  world): a :data:`Captioner` writes a caption from the ground truth for every sample (the
  embedded world's grammar is :func:`densevlm.data.synth.make_caption`), and a share of
  samples are random crops captioned from the crop's own ground truth (the *region-aware*
  recipe that makes a teacher better at stuff and at small regions), and a share are
  part-centred boxes captioned with their parts only (region-text pairs, which teach that a
  box around a part *is* that part, whatever surface shows around it).
* :class:`JsonlCaptionSource` -- any folder with a ``captions.jsonl`` of
  ``{"image": relative path, "caption": text}``: whole images, fixed captions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

from densevlm.data.panoptic import PanopticDataset
from densevlm.errors import DenseVLMError
from densevlm.imaging import open_image

__all__ = ["CaptionBatch", "Captioner", "PanopticCaptionSource", "JsonlCaptionSource", "open_caption_source"]

CaptionBatch = tuple[list[Image.Image], list[str]]

Captioner = Callable[[np.random.Generator, list[str], list[tuple[str, int]], float], str]
"""``(rng, things, stuff, p_stuff) -> caption``: a caption naming the thing category names
``things`` (repeats allowed) and some of the ``(stuff name, visible pixels)`` in ``stuff``,
the background with probability ``p_stuff`` when there are things; random choices from ``rng``."""


class PanopticCaptionSource:
    """Captions regenerated from panoptic ground truth, optionally on random crops.

    Args:
        root: a panoptic ``--data`` value (images, PNGs and JSON).
        captioner: writes each sample's caption from the names inside it.
        p_stuff: probability that a caption with things also names the background.
        crop_prob: share of samples that are random crops.
        crop_area: crop area as a fraction of the image, uniform in this range.
        part_crop_prob: share of samples that are boxes around one random part (its bounding
            box enlarged by a factor uniform in ``part_context``), captioned with the parts
            they hold and never the background. Images without parts give whole-image samples.
        part_context: range of the enlargement factor of part-centred boxes.
        min_thing_fraction: a thing is named in a crop caption when at least this fraction of
            its pixels (and at least 10 pixels) are inside the crop.
        seed: the source's seed.
    """

    def __init__(
        self,
        root: str | Path,
        captioner: Captioner,
        p_stuff: float = 0.15,
        crop_prob: float = 0.0,
        crop_area: tuple[float, float] = (0.08, 0.5),
        part_crop_prob: float = 0.0,
        part_context: tuple[float, float] = (1.0, 1.5),
        min_thing_fraction: float = 0.4,
        seed: int = 0,
    ) -> None:
        dataset = PanopticDataset(root)
        self.captioner = captioner
        self.p_stuff, self.crop_prob, self.crop_area = p_stuff, crop_prob, crop_area
        self.part_crop_prob, self.part_context = part_crop_prob, part_context
        self.min_thing_fraction = min_thing_fraction
        self.seed = seed
        self.images: list[np.ndarray] = []
        self.ids: list[np.ndarray] = []
        self.segments: list[list[tuple[int, str, bool, int]]] = []
        self.part_boxes: list[list[tuple[float, float, float, float]]] = []
        names, things = dataset.names, dataset.is_thing
        for i in range(len(dataset)):
            sample = dataset.load(i)
            self.images.append(np.asarray(sample.image))
            self.ids.append(sample.ids.astype(np.int32))
            segs, boxes = [], []
            for s in sample.segments:
                k = dataset.category_index[s["category_id"]]
                segs.append((s["id"], names[k], things[k], int(s["area"])))
                if things[k]:
                    boxes.append(_segment_box(sample.ids, s))
            self.segments.append(segs)
            self.part_boxes.append(boxes)

    def __len__(self) -> int:
        return len(self.images)

    def _caption(self, rng: np.random.Generator, index: int, box: Optional[tuple[int, int, int, int]],
                 p_stuff: Optional[float] = None) -> str:
        segs = self.segments[index]
        if box is None:
            things = [name for _, name, thing, _ in segs if thing]
            stuff = [(name, area) for _, name, thing, area in segs if not thing]
        else:
            x0, y0, x1, y1 = box
            crop = self.ids[index][y0:y1, x0:x1]
            ids, counts = np.unique(crop, return_counts=True)
            inside = dict(zip(ids.tolist(), counts.tolist()))
            things, stuff = [], []
            for sid, name, thing, area in segs:
                n = inside.get(sid, 0)
                if thing and n >= max(10, self.min_thing_fraction * area):
                    things.append(name)
                elif not thing and n > 0:
                    stuff.append((name, n))
            if not stuff:
                stuff = [(name, area) for _, name, thing, area in segs if not thing]
        return self.captioner(rng, things, stuff, self.p_stuff if p_stuff is None else p_stuff)

    def _crop_box(self, rng: np.random.Generator, h: int, w: int) -> tuple[int, int, int, int]:
        area = rng.uniform(*self.crop_area) * h * w
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw = int(np.clip(round(np.sqrt(area * aspect)), 8, w))
        ch = int(np.clip(round(np.sqrt(area / aspect)), 8, h))
        x0 = int(rng.integers(0, w - cw + 1))
        y0 = int(rng.integers(0, h - ch + 1))
        return x0, y0, x0 + cw, y0 + ch

    def _part_box(self, rng: np.random.Generator, index: int, h: int, w: int) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = self.part_boxes[index][int(rng.integers(len(self.part_boxes[index])))]
        grow = rng.uniform(*self.part_context)
        side_w = min(w, max(8.0, (x1 - x0) * grow))
        side_h = min(h, max(8.0, (y1 - y0) * grow))
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        left = int(round(min(max(cx - side_w / 2, 0.0), w - side_w)))
        top = int(round(min(max(cy - side_h / 2, 0.0), h - side_h)))
        return left, top, left + int(round(side_w)), top + int(round(side_h))

    def batch(self, step: int, batch_size: int) -> CaptionBatch:
        """Batch number ``step``: ``(images, captions)``; crops are resized to the image size."""
        rng = np.random.default_rng([self.seed, step])
        indices = rng.integers(0, len(self.images), size=batch_size)
        images, captions = [], []
        for index in indices.tolist():
            array = self.images[index]
            h, w = array.shape[:2]
            draw = rng.random()
            part = draw >= 1.0 - self.part_crop_prob and bool(self.part_boxes[index])
            if part:
                box = self._part_box(rng, index, h, w)
            else:
                box = self._crop_box(rng, h, w) if draw < self.crop_prob else None
            if box is None:
                images.append(Image.fromarray(array))
            else:
                x0, y0, x1, y1 = box
                images.append(Image.fromarray(array[y0:y1, x0:x1]).resize((w, h), Image.BILINEAR))
            captions.append(self._caption(rng, index, box, p_stuff=0.0 if part else None))
        return images, captions


class JsonlCaptionSource:
    """Whole images with the fixed captions of ``captions.jsonl``.

    Args:
        root: a directory containing ``captions.jsonl`` (image paths relative to it), or the
            JSONL file itself (paths relative to its folder).
    """

    def __init__(self, root: str | Path, seed: int = 0) -> None:
        path = Path(root)
        path = path / "captions.jsonl" if path.is_dir() else path
        if not path.is_file():
            raise DenseVLMError(f"{path}: captions file not found")
        self.base = path.parent
        self.seed = seed
        self.items: list[tuple[Path, str]] = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                self.items.append((self.base / rec["image"], str(rec["caption"])))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DenseVLMError(f"{path}:{lineno}: expected {{\"image\": ..., \"caption\": ...}}") from None
        if not self.items:
            raise DenseVLMError(f"{path}: no captions")

    def __len__(self) -> int:
        return len(self.items)

    def words(self) -> list[str]:
        """Every lower-case word of the captions, in first-seen order (for word-level tokenizers)."""
        import re

        seen: dict[str, None] = {}
        for _, caption in self.items:
            for word in re.findall(r"[a-z0-9]+", caption.lower()):
                seen.setdefault(word, None)
        return list(seen)

    def batch(self, step: int, batch_size: int) -> CaptionBatch:
        rng = np.random.default_rng([self.seed, step])
        indices = rng.integers(0, len(self.items), size=batch_size)
        images = [open_image(self.items[i][0]) for i in indices.tolist()]
        return images, [self.items[i][1] for i in indices.tolist()]


def _segment_box(ids: np.ndarray, segment: dict) -> tuple[float, float, float, float]:
    """XYXY pixel box of a segment: its JSON ``bbox`` (XYWH) or, without one, its pixels' extent."""
    if "bbox" in segment:
        x, y, w, h = (float(v) for v in segment["bbox"])
        return x, y, x + w, y + h
    ys, xs = np.nonzero(ids == segment["id"])
    return float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1


def open_caption_source(
    root: str | Path,
    captioner: Captioner,
    p_stuff: float = 0.15,
    crop_prob: float = 0.0,
    crop_area: tuple[float, float] = (0.08, 0.5),
    seed: int = 0,
    part_crop_prob: float = 0.0,
) -> PanopticCaptionSource | JsonlCaptionSource:
    """A panoptic source captioned by ``captioner`` when ground truth is there (``panoptic.json``),
    else ``captions.jsonl`` (whose fixed captions ignore ``captioner``, ``p_stuff`` and the crop settings)."""
    path = Path(root)
    if path.is_dir() and (path / "panoptic.json").is_file():
        return PanopticCaptionSource(path, captioner, p_stuff=p_stuff, crop_prob=crop_prob, crop_area=crop_area,
                                     part_crop_prob=part_crop_prob, seed=seed)
    return JsonlCaptionSource(path, seed=seed)
