"""One factory-floor scene with exact panoptic ground truth, and its web-like caption.

A scene is a pure function of its random generator: 1-3 stuff regions (a Voronoi partition of
domain-warped coordinates, each at least 12 % of the image) under 1-3 things; later things
occlude earlier ones; a thing with fewer than ``MIN_THING_AREA`` visible pixels is dropped
before rendering, and a stuff region left with fewer than ``MIN_STUFF_AREA`` visible pixels
makes the scene be drawn again, so no segment is ever empty or a few pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from densevlm.data.synth.categories import PLANT_WORDS, PLURALS, STUFF, THINGS
from densevlm.data.synth.plant import PLANT_DRAWERS
from densevlm.data.synth.shapes import THING_DRAWERS
from densevlm.data.synth.textures import render_texture, smooth_noise

__all__ = ["Segment", "Scene", "make_scene", "make_caption", "MIN_THING_AREA", "MIN_STUFF_AREA"]

MIN_THING_AREA = 10  # pixels, at any size
MIN_STUFF_FRACTION = 0.12  # of the image, for each region of the partition
MIN_STUFF_AREA = 24  # visible pixels per stuff segment (at 64 px; scaled by area)
PREFIXES = ("", "a photo of", "close up of", "an image of", "there is")
DRAWERS = {**THING_DRAWERS, **PLANT_DRAWERS}  # thing name -> draw(rng, h, w, scale) -> Instance


@dataclass
class Segment:
    """One panoptic segment.

    Attributes:
        id: segment id in the panoptic PNG (``R + 256 G + 256^2 B``), 1-based.
        category: category name.
        isthing: thing or stuff.
        mask: ``[H, W]`` bool, visible pixels only.
    """

    id: int
    category: str
    isthing: bool
    mask: np.ndarray

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def bbox(self) -> list[int]:
        """COCO ``[x, y, width, height]`` of the visible pixels."""
        ys, xs = np.nonzero(self.mask)
        return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


@dataclass
class Scene:
    """An image and its segments (stuff first, then things in drawing order)."""

    image: np.ndarray  # [H, W, 3] uint8
    segments: list[Segment]

    def panoptic_ids(self) -> np.ndarray:
        """``[H, W]`` int32 segment id per pixel (every pixel belongs to exactly one segment)."""
        ids = np.zeros(self.image.shape[:2], dtype=np.int32)
        for seg in self.segments:
            ids[seg.mask] = seg.id
        return ids


def _partition(rng: np.random.Generator, size: int) -> list[np.ndarray]:
    """1-3 region masks tiling the image; regions under the minimum fraction are merged away."""
    n = int(rng.integers(1, 4))
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    amp = size * 0.18
    wx = x + amp * (smooth_noise(rng, size, size, size / 3) - 0.5) * 2
    wy = y + amp * (smooth_noise(rng, size, size, size / 3) - 0.5) * 2
    seeds = rng.uniform(0, size, size=(n, 2))
    dist = np.stack([(wx - sx) ** 2 + (wy - sy) ** 2 for sx, sy in seeds])
    order = np.argsort(dist, axis=0)
    labels = order[0].copy()
    min_area = MIN_STUFF_FRACTION * size * size
    alive = list(range(n))
    while len(alive) > 1:
        areas = {k: int((labels == k).sum()) for k in alive}
        smallest = min(alive, key=lambda k: areas[k])
        if areas[smallest] >= min_area:
            break
        alive.remove(smallest)
        rank = np.full(n, n, dtype=np.int64)
        for r, k in enumerate(alive):
            rank[k] = r
        # reassign each pixel of the dropped region to its nearest surviving seed
        nearest = np.argmin(np.where(np.isin(np.arange(n)[:, None, None], alive), dist, np.inf), axis=0)
        labels = np.where(labels == smallest, nearest, labels)
    return [labels == k for k in alive]


def make_scene(rng: np.random.Generator, size: int = 64, max_things: int = 3,
               choose_things: Optional[Callable[[np.random.Generator, int], list[str]]] = None,
               choose_stuff: Optional[Callable[[np.random.Generator, int], list[str]]] = None,
               accept: Optional[Callable[[list[str]], bool]] = None) -> Scene:
    """Draw one scene of ``size x size`` pixels from ``rng``.

    The optional hooks change what is drawn (without them the scene is today's): ``choose_things
    (rng, n)`` and ``choose_stuff(rng, n)`` name the things and the stuff regions, and a scene
    whose visible things' categories ``accept`` refuses is drawn again.
    """
    scale = size / 64.0
    min_thing = MIN_THING_AREA
    min_stuff = max(MIN_STUFF_AREA, int(MIN_STUFF_AREA * scale * scale))
    while True:
        regions = _partition(rng, size)
        if choose_stuff is None:
            stuff_names = rng.choice([c.name for c in STUFF], size=len(regions), replace=False)
        else:
            stuff_names = choose_stuff(rng, len(regions))
        image = np.zeros((size, size, 3))
        for mask, name in zip(regions, stuff_names):
            texture = render_texture(str(name), rng, size, size)
            image[mask] = texture[mask]
        n_things = int(rng.integers(1, max_things + 1))
        if choose_things is None:
            names = rng.choice([c.name for c in THINGS], size=n_things)
        else:
            names = choose_things(rng, n_things)
        instances = [DRAWERS[str(n)](rng, size, size, scale) for n in names]
        visible = _visible_masks([inst.mask for inst in instances])
        kept = [(inst, vis) for inst, vis in zip(instances, visible) if vis.sum() >= min_thing]
        visible = _visible_masks([inst.mask for inst, _ in kept])
        covered = np.zeros((size, size), dtype=bool)
        for vis in visible:
            covered |= vis
        stuff_visible = [mask & ~covered for mask in regions]
        if not kept or any(m.sum() < min_stuff for m in stuff_visible):
            continue
        if accept is not None and not accept([inst.category for inst, _ in kept]):
            continue
        for inst, _ in kept:
            image = inst.paint(image)
        segments = [Segment(0, str(name), False, m) for m, name in zip(stuff_visible, stuff_names)]
        segments += [Segment(0, inst.category, True, vis) for (inst, _), vis in zip(kept, visible)]
        for i, seg in enumerate(segments, start=1):
            seg.id = i
        return Scene(np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8), segments)


def _visible_masks(masks: list[np.ndarray]) -> list[np.ndarray]:
    """Each mask minus every later mask (later things are drawn on top)."""
    out = []
    above = np.zeros_like(masks[0]) if masks else None
    for mask in reversed(masks):
        out.append(mask & ~above)
        above = above | mask
    return out[::-1]


def _with_article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def make_caption(rng: np.random.Generator, things: list[str], stuff: list[tuple[str, int]], p_stuff: float = 0.15) -> str:
    """A web-like caption: every thing named (except plant words, never named), the background only sometimes.

    Args:
        things: thing category names present (repeats allowed: "two bolts"); plant words
            (:data:`~densevlm.data.synth.categories.PLANT_WORDS`) are dropped, so their regions
            go uncaptioned.
        stuff: ``(name, visible area)`` of the stuff present.
        p_stuff: probability that the largest stuff is named when there are things;
            a caption without things always names its stuff.
    """
    prefix = PREFIXES[int(rng.integers(len(PREFIXES)))]
    things = [t for t in things if t not in PLANT_WORDS]
    stuff_sorted = [name for name, _ in sorted(stuff, key=lambda s: -s[1])]
    if things:
        counts: dict[str, int] = {}
        for t in things:
            counts[t] = counts.get(t, 0) + 1
        order = list(counts)
        rng.shuffle(order)
        words = {2: "two", 3: "three"}
        parts = [_with_article(t) if counts[t] == 1 else f"{words.get(counts[t], 'several')} {PLURALS[t]}" for t in order]
        text = _join(parts)
        if stuff_sorted and rng.random() < p_stuff:
            text += " on " + _with_article(stuff_sorted[0])
            if len(stuff_sorted) > 1 and rng.random() < 0.5:
                text += " next to " + _with_article(stuff_sorted[1])
    else:
        text = _with_article(stuff_sorted[0])
        if len(stuff_sorted) > 1 and rng.random() < 0.5:
            text += " next to " + _with_article(stuff_sorted[1])
    return f"{prefix} {text}".strip()


def scene_caption(rng: np.random.Generator, scene: Scene, p_stuff: float = 0.15) -> str:
    """Caption a whole scene from its ground truth."""
    things = [s.category for s in scene.segments if s.isthing]
    stuff = [(s.category, s.area) for s in scene.segments if not s.isthing]
    return make_caption(rng, things, stuff, p_stuff)
