"""The embedded-world sets the benchmarks share: an unlabeled pool and a held-out set.

Seeds never overlap with the shipped models' pretraining pool (seed 1) or with each other,
and the held-out set is the one the model card uses.
"""

from __future__ import annotations

from pathlib import Path

POOL_SEED = 1_000_000
HELDOUT_SEED = 2_000_000


def standard_worlds(work: Path, pool_size: int = 2000, heldout_size: int = 500) -> tuple[Path, Path]:
    """Generate (once) and return ``(work/unlabeled, work/heldout)``."""
    from densevlm.data.synth import write_world

    pool, heldout = work / "unlabeled", work / "heldout"
    for path, n, seed in ((pool, pool_size, POOL_SEED), (heldout, heldout_size, HELDOUT_SEED)):
        if not (path / "panoptic.json").is_file():
            write_world(path, n, seed=seed, workers=2, progress=False)
    return pool, heldout
