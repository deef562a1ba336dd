"""The embedded world for inspection: a chosen share of NG images, and drifted lines.

``--defect-rate R``: image ``i`` is NG when ``frac(phase + i * g) < R`` with ``g`` the golden
ratio's fractional part and ``phase`` drawn from the seed (a low-discrepancy sequence, so every
run of consecutive images holds ``R`` of NG images to within a few images, not only on
average). An NG image holds at least one visible defect (its first thing is a defect, the
others are drawn from parts and defects); an OK image holds parts only.

``--shift KIND`` draws a line that drifted from the reference world:

* ``lighting`` -- a darker line: every pixel times 0.55;
* ``blur`` -- out of focus: Gaussian blur, sigma 1.2 px at 64 px (scaled with the size);
* ``new-surface`` -- a surface the reference never had: one stuff region is cardboard;
* ``new-defect`` -- a defect the reference never had: every defect drawn is an oil stain;
* ``camera`` -- a different scale: the scene is zoomed 1.5x about its centre (crop, then
  nearest resize of the ground truth and bilinear resize of the image).

``--plant-words`` adds the plant words (synth/plant.py): rivet among the parts; burr, weld
spatter and porosity among the defects.

Without either flag nothing here runs and the world is byte-identical to the reference one.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
from PIL import Image

from densevlm.data.synth.categories import DEFECTS, HARDWARE, PLANT, STUFF, UNSEEN, Category
from densevlm.data.synth.scene import MIN_STUFF_AREA, MIN_THING_AREA, Scene, Segment, make_scene
from densevlm.errors import DenseVLMError

__all__ = ["SHIFTS", "is_ng", "inspection_scene", "extra_categories", "check_flags", "defect_names", "part_names"]

SHIFTS = ("lighting", "blur", "new-surface", "new-defect", "camera")
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_DARKEN = 0.55
_BLUR_SIGMA = 1.2
_ZOOM = 1.5


def check_flags(defect_rate: Optional[float], shift: Optional[str]) -> None:
    """One-line errors for a defect rate outside [0, 1] or an unknown shift."""
    if defect_rate is not None and not 0.0 <= defect_rate <= 1.0:
        raise DenseVLMError(f"--defect-rate {defect_rate} must be in [0, 1]")
    if shift is not None and shift not in SHIFTS:
        raise DenseVLMError(f"--shift {shift} is not one of {', '.join(SHIFTS)}")


def is_ng(seed: int, index: int, defect_rate: float) -> bool:
    """Whether image ``index`` of the world ``seed`` is NG (see the module docstring)."""
    phase = float(np.random.default_rng([seed, 3]).random())
    return (phase + index * _GOLDEN) % 1.0 < defect_rate


def extra_categories(shift: Optional[str]) -> tuple[Category, ...]:
    """Categories a shift adds to the reference ones."""
    wanted = {"new-surface": "cardboard", "new-defect": "oil stain"}.get(shift or "")
    return tuple(c for c in UNSEEN if c.name == wanted)


def defect_names(shift: Optional[str], plant_words: bool = False) -> tuple[str, ...]:
    """The defects drawn in a world with ``shift`` (and the plant words' defects with ``plant_words``)."""
    if shift == "new-defect":
        return ("oil stain",)
    return tuple(c.name for c in DEFECTS + (PLANT if plant_words else ()) if c.supercategory == "defect")


def part_names(plant_words: bool = False) -> tuple[str, ...]:
    """The parts (OK things) drawn in a world (the plant words' parts too with ``plant_words``)."""
    return tuple(c.name for c in HARDWARE + (PLANT if plant_words else ()) if c.supercategory != "defect")


def inspection_scene(rng: np.random.Generator, size: int, ng: Optional[bool], shift: Optional[str],
                     plant_words: bool = False) -> Scene:
    """One scene: NG (``True``), OK (``False``) or the reference mix (``None``), with ``shift`` applied;
    with ``plant_words`` the plant words (synth/plant.py) are drawn among the parts and defects."""
    defects = list(defect_names(shift, plant_words))
    parts = list(part_names(plant_words))
    pool = parts + defects

    def choose_things(rng: np.random.Generator, n: int) -> list[str]:
        if ng is None:
            return [str(x) for x in rng.choice(pool, size=n)]
        if not ng:
            return [str(x) for x in rng.choice(parts, size=n)]
        return [str(rng.choice(defects))] + [str(x) for x in rng.choice(parts + defects, size=n - 1)]

    def choose_stuff(rng: np.random.Generator, n: int) -> list[str]:
        names = [str(x) for x in rng.choice([c.name for c in STUFF], size=n, replace=False)]
        if shift == "new-surface":
            names[int(rng.integers(n))] = "cardboard"
        return names

    def accept(categories: list[str]) -> bool:
        return ng is None or any(c in defects for c in categories) == ng

    render_size = size
    while True:
        scene = make_scene(rng, size=render_size, choose_things=choose_things, choose_stuff=choose_stuff, accept=accept)
        if shift == "camera":
            scene = _zoom(scene, _ZOOM)
            if scene is None or not accept([s.category for s in scene.segments if s.isthing]):
                continue
        break
    if shift == "lighting":
        scene.image = np.clip(scene.image.astype(np.float64) * _DARKEN + 0.5, 0, 255).astype(np.uint8)
    elif shift == "blur":
        from scipy import ndimage

        sigma = _BLUR_SIGMA * size / 64.0
        blurred = ndimage.gaussian_filter(scene.image.astype(np.float64), sigma=(sigma, sigma, 0))
        scene.image = np.clip(blurred + 0.5, 0, 255).astype(np.uint8)
    return scene


def _zoom(scene: Scene, factor: float) -> Optional[Scene]:
    """The centre ``1/factor`` of ``scene`` resized back to its size; None when a segment gets too small."""
    h, w = scene.image.shape[:2]
    ch, cw = round(h / factor), round(w / factor)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = Image.fromarray(scene.image[y0 : y0 + ch, x0 : x0 + cw])
    image = np.asarray(crop.resize((w, h), Image.BILINEAR))
    rows = np.minimum(((np.arange(h) + 0.5) * ch / h).astype(np.int64), ch - 1) + y0
    cols = np.minimum(((np.arange(w) + 0.5) * cw / w).astype(np.int64), cw - 1) + x0
    min_stuff = max(MIN_STUFF_AREA, int(MIN_STUFF_AREA * (h / 64.0) ** 2))
    segments = []
    for seg in scene.segments:
        mask = seg.mask[rows][:, cols]
        if not mask.any():
            continue
        if mask.sum() < (MIN_THING_AREA if seg.isthing else min_stuff):
            return None
        segments.append(Segment(len(segments) + 1, seg.category, seg.isthing, mask))
    if not any(s.isthing for s in segments):
        return None
    return Scene(image, segments)
