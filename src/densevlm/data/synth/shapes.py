"""Things: hardware parts drawn as rotated, shaded shapes, and defects that alter the surface.

Each ``draw_*`` returns an :class:`Instance`: a boolean mask over the whole image and a
function that paints the instance onto an image. Sizes are in pixels of a 64 px image and are
scaled by ``scale`` (``size / 64``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from densevlm.data.synth.categories import by_name

__all__ = ["Instance", "THING_DRAWERS"]


@dataclass
class Instance:
    """One thing instance: its category, full (unoccluded) mask and how to paint it."""

    category: str
    mask: np.ndarray
    paint: Callable[[np.ndarray], np.ndarray]


def _frame(rng: np.random.Generator, h: int, w: int, margin: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Local coordinates ``(u, v)`` of every pixel for a random centre and rotation."""
    cx = rng.uniform(margin, w - margin)
    cy = rng.uniform(margin, h - margin)
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    dx, dy = x - cx, y - cy
    c, s = np.cos(angle), np.sin(angle)
    return dx * c + dy * s, -dx * s + dy * c, angle


def _hexagon(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Inside a regular hexagon of circumradius ``r`` centred at the origin (flat sides on v)."""
    au, av = np.abs(u), np.abs(v)
    return (av <= r * np.sqrt(3) / 2) & (au * np.sqrt(3) / 2 + av / 2 <= r * np.sqrt(3) / 2)


def _jittered_color(rng: np.random.Generator, name: str) -> np.ndarray:
    base = np.asarray(by_name(name).color)
    return np.clip(base + rng.uniform(-0.08, 0.08, size=3), 0.0, 1.0)


def _solid(rng: np.random.Generator, name: str, mask: np.ndarray, u: np.ndarray, v: np.ndarray, extent: float, detail: np.ndarray | None = None) -> Instance:
    """A hardware part: class colour, a light gradient across it, darker detail lines."""
    color = _jittered_color(rng, name)
    light = rng.uniform(0, 2 * np.pi)
    shade = 0.78 + 0.22 * np.clip((u * np.cos(light) + v * np.sin(light)) / max(extent, 1.0), -1, 1)
    if detail is not None:
        shade = shade * np.where(detail, 0.72, 1.0)
    layer = np.clip(shade[..., None] * color[None, None, :], 0.0, 1.0)

    def paint(image: np.ndarray) -> np.ndarray:
        out = image.copy()
        out[mask] = layer[mask]
        return out

    return Instance(name, mask, paint)


def draw_bolt(rng: np.random.Generator, h: int, w: int, scale: float) -> Instance:
    length = rng.uniform(16, 28) * scale
    u, v, _ = _frame(rng, h, w, length / 3)
    head_r = rng.uniform(3.5, 5.0) * scale
    shaft_w = rng.uniform(2.6, 3.6) * scale
    head_c = length / 2 - head_r
    head = _hexagon(u - head_c, v, head_r)
    shaft = (u >= -length / 2) & (u <= head_c) & (np.abs(v) <= shaft_w / 2)
    threads = shaft & (((u + length) % (2.0 * scale)) < 0.8 * scale)
    return _solid(rng, "bolt", head | shaft, u, v, length / 2, threads)


def draw_nut(rng: np.random.Generator, h: int, w: int, scale: float) -> Instance:
    r = rng.uniform(6, 10) * scale
    u, v, _ = _frame(rng, h, w, r)
    hole = u**2 + v**2 <= (r * 0.4) ** 2
    body = _hexagon(u, v, r) & ~hole
    rim = body & (u**2 + v**2 <= (r * 0.55) ** 2)
    return _solid(rng, "nut", body, u, v, r, rim)


def draw_washer(rng: np.random.Generator, h: int, w: int, scale: float) -> Instance:
    r = rng.uniform(6, 10) * scale
    u, v, _ = _frame(rng, h, w, r)
    d2 = u**2 + v**2
    body = (d2 <= r**2) & (d2 >= (r * 0.5) ** 2)
    return _solid(rng, "washer", body, u, v, r)


def draw_gear(rng: np.random.Generator, h: int, w: int, scale: float) -> Instance:
    r = rng.uniform(7, 12) * scale
    u, v, _ = _frame(rng, h, w, r)
    teeth = int(rng.integers(7, 11))
    theta = np.arctan2(v, u)
    radius = np.where(np.sin(theta * teeth) > 0, r, r * 0.78)
    d2 = u**2 + v**2
    body = (d2 <= radius**2) & (d2 >= (r * 0.3) ** 2)
    hub = body & (d2 <= (r * 0.45) ** 2)
    return _solid(rng, "gear", body, u, v, r, hub)


def draw_spring(rng: np.random.Generator, h: int, w: int, scale: float) -> Instance:
    """A coil seen from the side: a band crossed by slanted windings."""
    length = rng.uniform(16, 26) * scale
    u, v, _ = _frame(rng, h, w, length / 3)
    radius = rng.uniform(2.8, 4.0) * scale
    pitch = rng.uniform(3.0, 4.0) * scale
    body = (np.abs(v) <= radius) & (np.abs(u) <= length / 2)
    windings = body & (((u + 0.6 * v + length) % pitch) < 0.45 * pitch)
    return _solid(rng, "spring", body, u, v, length / 2, windings)


def draw_screw(rng: np.random.Generator, h: int, w: int, scale: float) -> Instance:
    length = rng.uniform(16, 26) * scale
    u, v, _ = _frame(rng, h, w, length / 3)
    head_r = rng.uniform(3.0, 4.2) * scale
    shaft_w = rng.uniform(2.6, 3.4) * scale
    start = -length / 2 + head_r
    taper = np.clip((length / 2 - u) / (length * 0.35), 0.0, 1.0)
    shaft = (u >= start) & (u <= length / 2) & (np.abs(v) <= shaft_w / 2 * taper)
    head = (u - start) ** 2 + v**2 <= head_r**2
    threads = shaft & (((u + v * 0.5 + length) % (2.0 * scale)) < 0.8 * scale)
    return _solid(rng, "screw", head | shaft, u, v, length / 2, threads)


def _segment_distance(x: np.ndarray, y: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    d = q - p
    t = np.clip(((x - p[0]) * d[0] + (y - p[1]) * d[1]) / max(float(d @ d), 1e-9), 0.0, 1.0)
    return np.hypot(x - (p[0] + t * d[0]), y - (p[1] + t * d[1]))


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    return x, y


def draw_scratch(rng: np.random.Generator, h: int, w: int, scale: float) -> Instance:
    """A bright straight line, never close to axis-aligned (so its box is not degenerate)."""
    length = rng.uniform(18, 30) * scale
    angle = rng.uniform(np.radians(25), np.radians(65)) + rng.integers(0, 4) * np.pi / 2
    cx = rng.uniform(length / 3, w - length / 3)
    cy = rng.uniform(length / 3, h - length / 3)
    half = np.array([np.cos(angle), np.sin(angle)]) * length / 2
    x, y = _grid(h, w)
    mask = _segment_distance(x, y, np.array([cx, cy]) - half, np.array([cx, cy]) + half) <= 1.0 * scale
    brightness = rng.uniform(0.8, 0.95)

    def paint(image: np.ndarray) -> np.ndarray:
        out = image.copy()
        out[mask] = 0.35 * out[mask] + 0.65 * brightness
        return out

    return Instance("scratch", mask, paint)


def draw_crack(rng: np.random.Generator, h: int, w: int, scale: float) -> Instance:
    """A dark jagged polyline (a random walk with a drift)."""
    steps = int(rng.integers(4, 7))
    seg = rng.uniform(4, 6) * scale
    heading = rng.uniform(0, 2 * np.pi)
    start = np.array([rng.uniform(0.25 * w, 0.75 * w), rng.uniform(0.25 * h, 0.75 * h)])
    points = [start]
    for _ in range(steps):
        heading += rng.uniform(-0.9, 0.9)
        points.append(points[-1] + seg * np.array([np.cos(heading), np.sin(heading)]))
    x, y = _grid(h, w)
    dist = np.min([_segment_distance(x, y, p, q) for p, q in zip(points[:-1], points[1:])], axis=0)
    mask = dist <= 0.9 * scale

    def paint(image: np.ndarray) -> np.ndarray:
        out = image.copy()
        out[mask] = 0.18 * out[mask] + 0.02
        return out

    return Instance("crack", mask, paint)


def draw_dent(rng: np.random.Generator, h: int, w: int, scale: float) -> Instance:
    """A shallow elliptical dent: lit on one side, shadowed on the other, dark rim."""
    a = rng.uniform(5, 9) * scale
    b = rng.uniform(4, 7) * scale
    u, v, _ = _frame(rng, h, w, a)
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    mask = r <= 1.0
    light = np.clip(1.0 + 0.8 * (u / a), 0.2, 1.8)
    rim = (r > 0.75) & mask

    def paint(image: np.ndarray) -> np.ndarray:
        out = image.copy()
        shade = np.where(rim, 0.45, light)
        out[mask] = np.clip(out[mask] * shade[mask][:, None] + 0.08 * (light[mask][:, None] - 1.0), 0.0, 1.0)
        return out

    return Instance("dent", mask, paint)


def draw_rust_spot(rng: np.random.Generator, h: int, w: int, scale: float) -> Instance:
    """An irregular orange-brown blob with speckle."""
    r = rng.uniform(5, 9) * scale
    u, v, _ = _frame(rng, h, w, r)
    theta = np.arctan2(v, u)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    wobble = 1.0 + 0.18 * (np.sin(3 * theta + phases[0]) + np.sin(5 * theta + phases[1]) + np.sin(2 * theta + phases[2])) / 3
    mask = np.sqrt(u**2 + v**2) <= r * wobble
    rust = np.array([0.58, 0.28, 0.08]) * rng.uniform(0.85, 1.15)
    speckle = rng.uniform(0.75, 1.15, size=mask.shape)

    def paint(image: np.ndarray) -> np.ndarray:
        out = image.copy()
        color = np.clip(rust[None, :] * speckle[mask][:, None], 0.0, 1.0)
        out[mask] = 0.2 * out[mask] + 0.8 * color
        return out

    return Instance("rust spot", mask, paint)


def draw_oil_stain(rng: np.random.Generator, h: int, w: int, scale: float) -> Instance:
    """A dark, glossy, translucent blob with a bright rim highlight (``--shift new-defect`` only)."""
    r = rng.uniform(5, 9) * scale
    u, v, _ = _frame(rng, h, w, r)
    theta = np.arctan2(v, u)
    wobble = 1.0 + 0.12 * np.sin(4 * theta + rng.uniform(0, 2 * np.pi))
    d = np.sqrt(u**2 + v**2) / (r * wobble)
    mask = d <= 1.0
    sheen = np.clip(1.0 - np.abs(d - 0.6) * 5.0, 0.0, 1.0)

    def paint(image: np.ndarray) -> np.ndarray:
        out = image.copy()
        tint = np.array([0.10, 0.09, 0.14])
        out[mask] = 0.35 * out[mask] + 0.65 * tint + 0.25 * sheen[mask][:, None] * np.array([0.55, 0.70, 0.60])
        return np.clip(out, 0.0, 1.0)

    return Instance("oil stain", mask, paint)


THING_DRAWERS: dict[str, Callable[[np.random.Generator, int, int, float], Instance]] = {
    "bolt": draw_bolt,
    "nut": draw_nut,
    "washer": draw_washer,
    "gear": draw_gear,
    "spring": draw_spring,
    "screw": draw_screw,
    "scratch": draw_scratch,
    "crack": draw_crack,
    "dent": draw_dent,
    "rust spot": draw_rust_spot,
    "oil stain": draw_oil_stain,
}
