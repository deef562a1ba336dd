"""Calibration images for int8 export: the user's own unlabeled images, split into a calibration
part (activation statistics for NNCF) and a held-back part (the accuracy gate).

    >>> source = open_image_source("line_photos/")          # any source `densevlm train --images` takes
    >>> split = split_calibration(source, "line_photos/", size=300)
    >>> images, plans, skipped = prepare_images(model, source, split.calibrate, model.input_size)

The split is a seeded permutation of the source's indices: the first ``holdout`` go to the
gate, the next ``size`` to calibration, so the two never overlap and the same source gives the
same split on every run (``densevlm export --check`` re-creates it from the recorded names).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from densevlm.data.images import ImageSource
from densevlm.errors import DenseVLMError
from densevlm.imaging import Letterbox

__all__ = ["CalibrationSplit", "DEFAULT_SIZE", "MAX_HELDOUT", "split_calibration", "prepare_images"]

log = logging.getLogger(__name__)

DEFAULT_SIZE = 300  # calibration images by default (fewer when the source has fewer)
# held-back images for the gate: a fifth of the source, at most this many. At 64 images (14 boxes each)
# the box-score agreement has a binomial standard error of 0.33 points near 99 %; at 32 it was 0.47,
# enough to refuse tiny-student (99.1 % on 500 held-out scenes) on one draw and pass it on another.
MAX_HELDOUT = 64


@dataclass(frozen=True)
class CalibrationSplit:
    """Which images of a source calibrate and which are held back for the gate.

    Attributes:
        source: the image-source argument as given (e.g. a folder or a shard pattern).
        total: images in the source.
        calibrate: source indices used for calibration (sorted).
        heldout: source indices held back for the accuracy gate (sorted, disjoint from ``calibrate``).
        seed: seed of the permutation.
    """

    source: str
    total: int
    calibrate: tuple[int, ...]
    heldout: tuple[int, ...]
    seed: int = 0

    def to_json(self, source: ImageSource) -> dict[str, Any]:
        """JSON-ready record for the manifest, with the held-back images' names."""
        return {
            "source": self.source,
            "images_found": self.total,
            "count": len(self.calibrate),
            "heldout": len(self.heldout),
            "heldout_names": [source.name(i) for i in self.heldout],
            "seed": self.seed,
        }


def split_calibration(
    source: ImageSource, spec: str, size: int = DEFAULT_SIZE, holdout: int | None = None, seed: int = 0
) -> CalibrationSplit:
    """Split ``source`` into held-back and calibration images.

    Args:
        source: the opened image source (:func:`densevlm.data.images.open_image_source`).
        spec: how the user named it (recorded in the manifest).
        size: calibration images wanted; fewer when the source has fewer.
        holdout: held-back images (default: a fifth of the source, at least 1 when the source has
            two or more images, at most :data:`MAX_HELDOUT`).
        seed: permutation seed.

    Raises:
        DenseVLMError: ``size`` below 1, or ``holdout`` leaves no calibration image.
    """
    if size < 1:
        raise DenseVLMError(f"--calibration-size {size}: give at least 1")
    total = len(source)
    if holdout is None:
        holdout = min(MAX_HELDOUT, max(1 if total >= 2 else 0, total // 5))
    if holdout >= total:
        raise DenseVLMError(f"{spec}: {total} images leave none for calibration after holding back {holdout}")
    order = np.random.default_rng(seed).permutation(total)
    heldout = tuple(sorted(int(i) for i in order[:holdout]))
    calibrate = tuple(sorted(int(i) for i in order[holdout : holdout + size]))
    return CalibrationSplit(spec, total, calibrate, heldout, seed)


def prepare_images(
    model: Any, source: ImageSource, indices: Sequence[int], size: int
) -> tuple[list[torch.Tensor], list[Letterbox], list[str]]:
    """Load and letterbox images as ``model`` would (square, longest side ``size``).

    Unreadable images are skipped (logged and returned by name) so one broken file does not stop
    an export.

    Args:
        model: anything with ``prepare(pil, size, square)`` (a DenseModel or an export runtime).
        indices: source indices to load.
        size: input side in pixels.

    Returns:
        ``(inputs, plans, skipped)``: ``[3, size, size]`` normalised tensors, their letterbox
        geometry, and the names of skipped images.

    Raises:
        DenseVLMError: no image could be read.
    """
    inputs, plans, skipped = [], [], []
    for i in indices:
        try:
            x, plan = model.prepare(source.load(i), size=size, square=True)
        except DenseVLMError as e:
            log.warning("skipping calibration image: %s", e)
            skipped.append(source.name(i))
            continue
        inputs.append(x)
        plans.append(plan)
    if indices and not inputs:
        raise DenseVLMError(f"none of the {len(indices)} calibration images could be read (first: {skipped[0]})")
    return inputs, plans, skipped
