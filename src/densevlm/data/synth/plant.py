"""Plant words: classes of the embedded world that no caption ever names (``synth --plant-words``).

A real plant's words ("burr", "weld spatter", "porosity"...) are site-specific and
fine-grained: a web-trained CLIP has seen few or no images captioned with them. The embedded
world reproduces that with four extra things, drawn with their own look, whose regions are
never named in a caption (:func:`densevlm.data.synth.scene.make_caption` drops them), so no
model pretrained on the world can name them from text. Review and few-shot adaptation are what
teach them (``densevlm vocab adapt``).

* ``burr`` (defect) -- a sawtooth sliver of raised (anodised, violet) metal with a dark shadow
  along its base;
* ``weld spatter`` (defect) -- a cluster of 5-9 heat-tinted (pale blue) beads, each with a bright
  highlight and a dark rim;
* ``porosity`` (defect) -- a cluster of 6-12 dark pinholes, each ringed by a yellow-green lip
  (primer showing through);
* ``rivet`` (part) -- a teal dome head with a darker flange ring.

As the world's other things do, each has a look no other class shares, and they are drawn at
the other things' sizes (burrs 20-32 px long, clusters about 20-40 px across, rivets 14-22 px
wide). Before December 2026 they were half that size, a token or two of a 64 px model, and burr
was the washer's white, spatter close to the bolt's yellow and porosity's lip the scratch's light
grey: a linear probe on the default teacher's region features, given 10 labelled boxes of every
class, named 39 % of them (``BENCHMARKS.md``, "Plant words"), so review could not show what it
teaches.

Sizes are in pixels of a 64 px image, scaled by ``scale = size / 64`` like the other things.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from densevlm.data.synth.categories import PLANT, THINGS
from densevlm.data.synth.shapes import Instance, _frame, _grid, _solid

__all__ = ["PLANT_DRAWERS", "plant_things", "draw_burr", "draw_weld_spatter", "draw_porosity", "draw_rivet"]


def draw_burr(rng: np.random.Generator, h: int, w: int, scale: float) -> Instance:
    """A sawtooth sliver 20-32 px long: teeth 4-7 px high on a 4 px base, lit metal over a dark base line."""
    length = rng.uniform(20, 32) * scale
    u, v, _ = _frame(rng, h, w, length / 2 + 4 * scale)
    period = rng.uniform(5.0, 7.0) * scale
    height = rng.uniform(4.0, 7.0) * scale
    phase = (u / period) % 1.0
    tooth = height * (1.0 - np.abs(2.0 * phase - 1.0))
    inside = np.abs(u) <= length / 2
    mask = inside & (v >= -2.0 * scale) & (v <= 2.0 * scale + tooth)
    shadow = mask & (v <= 0.0)
    brightness = rng.uniform(0.85, 1.0)

    def paint(image: np.ndarray) -> np.ndarray:
        out = image.copy()
        out[mask] = brightness * np.array([0.58, 0.30, 0.82])
        out[shadow] = 0.25 * out[shadow] + 0.04
        return out

    return Instance("burr", mask, paint)


def _cluster(rng: np.random.Generator, h: int, w: int, n: int, spread: float, margin: float) -> np.ndarray:
    """``[n, 2]`` centres (x, y) scattered in a disk of radius ``spread`` around a random point."""
    cx = rng.uniform(margin, w - margin)
    cy = rng.uniform(margin, h - margin)
    radius = spread * np.sqrt(rng.random(n))
    angle = rng.uniform(0, 2 * np.pi, n)
    return np.stack([cx + radius * np.cos(angle), cy + radius * np.sin(angle)], axis=1)


def draw_weld_spatter(rng: np.random.Generator, h: int, w: int, scale: float) -> Instance:
    """5-9 beads of radius 2.6-4.6 px within 10-16 px of a centre: pale blue heat tint, bright centre, dark rim."""
    n = int(rng.integers(5, 10))
    spread = rng.uniform(10, 16) * scale
    centres = _cluster(rng, h, w, n, spread, spread + 4 * scale)
    radii = rng.uniform(2.6, 4.6, n) * scale
    x, y = _grid(h, w)
    dist = np.stack([np.hypot(x - cx, y - cy) / r for (cx, cy), r in zip(centres, radii)])
    rel = dist.min(axis=0)
    mask = rel <= 1.0
    tint = np.array([0.40, 0.72, 0.86]) * rng.uniform(0.9, 1.1)
    shade = np.where(rel < 0.4, 1.6, np.where(rel > 0.75, 0.45, 1.0))

    def paint(image: np.ndarray) -> np.ndarray:
        out = image.copy()
        out[mask] = np.clip(tint[None, :] * shade[mask][:, None], 0.0, 1.0)
        return out

    return Instance("weld spatter", mask, paint)


def draw_porosity(rng: np.random.Generator, h: int, w: int, scale: float) -> Instance:
    """6-12 pinholes of radius 1.8-2.8 px within 8-14 px of a centre: black pits with a light 1.4 px lip."""
    n = int(rng.integers(6, 13))
    spread = rng.uniform(8, 14) * scale
    centres = _cluster(rng, h, w, n, spread, spread + 4 * scale)
    radii = rng.uniform(1.8, 2.8, n) * scale
    x, y = _grid(h, w)
    gap = np.stack([np.hypot(x - cx, y - cy) - r for (cx, cy), r in zip(centres, radii)]).min(axis=0)
    mask = gap <= 1.4 * scale
    pit = gap <= 0.0

    def paint(image: np.ndarray) -> np.ndarray:
        out = image.copy()
        lip = mask & ~pit
        out[lip] = 0.3 * out[lip] + 0.7 * np.array([0.72, 0.86, 0.22])
        out[pit] = 0.1 * out[pit] + 0.02
        return out

    return Instance("porosity", mask, paint)


def draw_rivet(rng: np.random.Generator, h: int, w: int, scale: float) -> Instance:
    """A round dome head of radius 7-11 px in the class colour, lit from one side, darker flange ring."""
    r = rng.uniform(7.0, 11.0) * scale
    u, v, _ = _frame(rng, h, w, r)
    d2 = u**2 + v**2
    body = d2 <= r**2
    flange = body & (d2 >= (0.75 * r) ** 2)
    return _solid(rng, "rivet", body, u, v, r, flange)


PLANT_DRAWERS: dict[str, Callable[[np.random.Generator, int, int, float], Instance]] = {
    "burr": draw_burr,
    "weld spatter": draw_weld_spatter,
    "porosity": draw_porosity,
    "rivet": draw_rivet,
}


def plant_things(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` thing names drawn uniformly from the world's things plus the plant words (14 in all)."""
    return [str(x) for x in rng.choice([c.name for c in THINGS + PLANT], size=n)]
