"""Procedural stuff textures: each returns an ``[H, W, 3]`` float image in [0, 1].

Every texture is a pure function of its ``numpy.random.Generator``; colours are jittered per
image so a model must learn the pattern, not one exact colour.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["TEXTURES", "smooth_noise", "render_texture"]


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """``[h, w]`` value noise in [0, 1]: random values on a grid of ``cell`` px, bilinearly interpolated."""
    gh, gw = int(np.ceil(h / cell)) + 2, int(np.ceil(w / cell)) + 2
    grid = rng.random((gh, gw))
    y = np.arange(h)[:, None] / cell + rng.random()
    x = np.arange(w)[None, :] / cell + rng.random()
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = y - y0, x - x0
    top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
    bottom = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _coords(h: int, w: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    c, s = np.cos(angle), np.sin(angle)
    return x * c + y * s, -x * s + y * c


def _tint(gray: np.ndarray, rgb: tuple[float, float, float]) -> np.ndarray:
    return np.clip(gray[..., None] * np.asarray(rgb)[None, None, :], 0.0, 1.0)


def conveyor_belt(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Dark rubber with parallel ridges."""
    u, _ = _coords(h, w, rng.uniform(-0.3, 0.3) + rng.choice([0.0, np.pi / 2]))
    period = rng.uniform(4.0, 6.0)
    ridges = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * u / period))
    base = rng.uniform(0.16, 0.24)
    gray = base + 0.09 * ridges + 0.03 * (rng.random((h, w)) - 0.5)
    return _tint(gray, (1.0, 1.0, 1.05))


def steel_plate(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Light blue-grey metal with a diamond tread pattern."""
    period = rng.uniform(6.0, 8.0)
    u, v = _coords(h, w, rng.uniform(0, np.pi))
    cu = (u / period) % 1.0 - 0.5
    cv = (v / period) % 1.0 - 0.5
    row = np.floor(v / period).astype(int) % 2
    d = np.where(row == 0, np.abs(cu) * 2.2 + np.abs(cv) * 0.6, np.abs(cu) * 0.6 + np.abs(cv) * 2.2)
    tread = (d < 0.35).astype(np.float64)
    sheen = np.linspace(-0.06, 0.06, w)[None, :] * rng.choice([-1, 1])
    gray = rng.uniform(0.55, 0.66) + 0.16 * tread + sheen + 0.02 * (rng.random((h, w)) - 0.5)
    return _tint(gray, (0.95, 1.0, 1.08))


def wooden_pallet(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Brown planks with grain and dark gaps."""
    u, v = _coords(h, w, rng.choice([0.0, np.pi / 2]) + rng.uniform(-0.1, 0.1))
    plank = rng.uniform(10.0, 14.0)
    gap = ((u % plank) < 2.0).astype(np.float64)
    plank_id = np.floor(u / plank)
    shade = 0.85 + 0.15 * np.sin(plank_id * 12.9898 + rng.uniform(0, 6.28))
    grain = 0.9 + 0.1 * np.sin(v * rng.uniform(0.8, 1.4) + 3.0 * np.sin(u * 0.7))
    gray = shade * grain * (1.0 - 0.65 * gap)
    base = np.array([0.62, 0.42, 0.22]) * rng.uniform(0.9, 1.1)
    return np.clip(gray[..., None] * base[None, None, :], 0.0, 1.0)


def concrete_floor(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Grey speckle with soft blotches."""
    blotch = smooth_noise(rng, h, w, rng.uniform(10.0, 18.0))
    speckle = rng.random((h, w))
    gray = rng.uniform(0.48, 0.58) + 0.12 * (blotch - 0.5) + 0.14 * (speckle - 0.5)
    return _tint(gray, (1.02, 1.0, 0.96))


def cloth(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A saturated random hue with a fine woven checker."""
    y, x = np.mgrid[0:h, 0:w]
    weave = ((x // 1 + y // 1) % 2).astype(np.float64)
    hue = rng.random()
    rgb = np.clip(np.abs((hue * 6.0 + np.array([0.0, 4.0, 2.0])) % 6.0 - 3.0) - 1.0, 0.0, 1.0)
    rgb = 0.25 + 0.55 * rgb
    gray = 0.85 + 0.15 * weave + 0.04 * (rng.random((h, w)) - 0.5)
    return np.clip(gray[..., None] * rgb[None, None, :], 0.0, 1.0)


def rubber_mat(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Very dark rubber with a grid of raised dots."""
    period = rng.uniform(5.0, 7.0)
    u, v = _coords(h, w, rng.uniform(0, np.pi / 2))
    cu = (u / period) % 1.0 - 0.5
    cv = (v / period) % 1.0 - 0.5
    dots = ((cu**2 + cv**2) < 0.06).astype(np.float64)
    gray = rng.uniform(0.07, 0.12) + 0.16 * dots + 0.02 * (rng.random((h, w)) - 0.5)
    return _tint(gray, (1.0, 1.0, 1.0))


def cardboard(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Tan corrugated board: soft parallel flutes (not in the reference world; ``--shift new-surface``)."""
    u, _ = _coords(h, w, rng.uniform(0, np.pi))
    flutes = 0.5 + 0.5 * np.sin(2 * np.pi * u / rng.uniform(2.5, 3.5))
    gray = rng.uniform(0.78, 0.88) + 0.08 * flutes + 0.05 * (smooth_noise(rng, h, w, 8.0) - 0.5)
    return np.clip(gray[..., None] * np.array([0.80, 0.62, 0.40])[None, None, :], 0.0, 1.0)


TEXTURES: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "conveyor belt": conveyor_belt,
    "steel plate": steel_plate,
    "wooden pallet": wooden_pallet,
    "concrete floor": concrete_floor,
    "cloth": cloth,
    "rubber mat": rubber_mat,
    "cardboard": cardboard,
}


def render_texture(name: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Render the stuff texture ``name`` at ``h x w`` with per-image colour jitter."""
    image = TEXTURES[name](rng, h, w)
    jitter = rng.uniform(0.92, 1.08, size=3)
    return np.clip(image * jitter[None, None, :], 0.0, 1.0)
