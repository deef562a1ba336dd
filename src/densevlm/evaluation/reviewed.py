"""The region protocol on an expert-reviewed held-out set: the accepted or corrected regions of a review database."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from densevlm.evaluation.protocol import EvalConfig, EvalResult
from densevlm.evaluation.regions import LabelledRegion, evaluate_regions
from densevlm.review.reviewed import load_reviewed

__all__ = ["evaluate_reviewed"]


def evaluate_reviewed(model, db_path: str | Path, cfg: Optional[EvalConfig] = None) -> EvalResult:
    """Classify every region experts accepted or corrected, over the reviewed vocabulary (see :func:`evaluate_regions`)."""
    reviewed = load_reviewed(db_path)
    regions = [LabelledRegion(r.image_path, r.box, r.label, r.mask_rle) for r in reviewed.regions if r.label is not None]
    return evaluate_regions(model, regions, reviewed.vocab, cfg)
