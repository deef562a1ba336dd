"""What the benchmarks share: the embedded-world sets, the metric columns and their formatting.

Seeds never overlap with the shipped models' pretraining pool (seed 1) or with each other,
and the held-out set is the one the model card uses.
"""

from __future__ import annotations

import statistics
from pathlib import Path

POOL_SEED = 1_000_000
HELDOUT_SEED = 2_000_000

# (metric key of densevlm.evaluate, column name) of the region-classification tables
KEYS = [("box.thing.macc1", "box thing"), ("box.stuff.macc1", "box stuff"), ("box.fg_bias", "box fg_bias"),
        ("mask.thing.macc1", "mask thing"), ("mask.stuff.macc1", "mask stuff"), ("mask.fg_bias", "mask fg_bias")]


def ensure_world(path: Path, n: int, seed: int, **flags) -> Path:
    """Generate an embedded world of ``n`` scenes at ``path`` unless one is there already
    (``flags``: ``defect_rate``, ``shift`` of ``write_world``)."""
    from densevlm.data.synth import write_world

    if not (path / "panoptic.json").is_file():
        write_world(path, n, seed=seed, workers=2, progress=False, **flags)
    return path


def standard_worlds(work: Path, pool_size: int = 2000, heldout_size: int = 500) -> tuple[Path, Path]:
    """Generate (once) and return ``(work/unlabeled, work/heldout)``."""
    return ensure_world(work / "unlabeled", pool_size, POOL_SEED), ensure_world(work / "heldout", heldout_size, HELDOUT_SEED)


def mean_std(values: list[float]) -> str:
    """``"m ± s"`` with one decimal (just ``"m"`` for a single value)."""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"
