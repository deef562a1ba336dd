"""The embedded world's categories: 10 things (6 hardware parts, 4 surface defects) and 6 stuff textures."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Category", "CATEGORIES", "THINGS", "STUFF", "HARDWARE", "DEFECTS", "UNSEEN", "PLANT", "PLANT_WORDS",
           "PLURALS", "by_name"]


@dataclass(frozen=True)
class Category:
    """One class of the world.

    Attributes:
        id: COCO category id (1-based, stable).
        name: display name (also the caption word(s)).
        isthing: True for countable things, False for stuff.
        supercategory: ``hardware``, ``defect`` or ``surface``.
        color: class-typical RGB in [0, 1] for hardware (what lets a small model learn it);
            None for defects and stuff.
    """

    id: int
    name: str
    isthing: bool
    supercategory: str
    color: tuple[float, float, float] | None = None


HARDWARE = (
    Category(1, "bolt", True, "hardware", (0.92, 0.80, 0.18)),
    Category(2, "nut", True, "hardware", (0.20, 0.36, 0.92)),
    Category(3, "washer", True, "hardware", (0.94, 0.94, 0.94)),
    Category(4, "gear", True, "hardware", (0.22, 0.78, 0.30)),
    Category(5, "spring", True, "hardware", (0.90, 0.20, 0.18)),
    Category(6, "screw", True, "hardware", (0.95, 0.50, 0.76)),
)
DEFECTS = (
    Category(7, "scratch", True, "defect"),
    Category(8, "crack", True, "defect"),
    Category(9, "dent", True, "defect"),
    Category(10, "rust spot", True, "defect"),
)
STUFF = (
    Category(11, "conveyor belt", False, "surface"),
    Category(12, "steel plate", False, "surface"),
    Category(13, "wooden pallet", False, "surface"),
    Category(14, "concrete floor", False, "surface"),
    Category(15, "cloth", False, "surface"),
    Category(16, "rubber mat", False, "surface"),
)
THINGS = HARDWARE + DEFECTS
CATEGORIES = THINGS + STUFF
# Never in the reference world: drawn only by `synth --shift new-surface` / `--shift new-defect`.
UNSEEN = (
    Category(91, "cardboard", False, "surface"),
    Category(92, "oil stain", True, "defect"),
)
# Plant words: drawn only by `synth --plant-words` (synth/plant.py) and never named in a caption.
PLANT = (
    Category(31, "burr", True, "defect"),
    Category(32, "weld spatter", True, "defect"),
    Category(33, "porosity", True, "defect"),
    Category(34, "rivet", True, "hardware", (0.10, 0.62, 0.66)),
)
PLANT_WORDS = frozenset(c.name for c in PLANT)

PLURALS = {
    "bolt": "bolts",
    "nut": "nuts",
    "washer": "washers",
    "gear": "gears",
    "spring": "springs",
    "screw": "screws",
    "scratch": "scratches",
    "crack": "cracks",
    "dent": "dents",
    "rust spot": "rust spots",
    "oil stain": "oil stains",
}


def by_name(name: str) -> Category:
    for c in CATEGORIES + UNSEEN + PLANT:
        if c.name == name:
            return c
    raise KeyError(name)
