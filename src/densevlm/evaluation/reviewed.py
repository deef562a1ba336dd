"""The region protocol on an expert-reviewed held-out set: the accepted or corrected regions of a review database."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from densevlm.evaluation.protocol import EvalConfig, EvalResult
from densevlm.evaluation.regions import LabelledRegion, evaluate_regions
from densevlm.review.reviewed import load_reviewed_regions, reviewed_vocabulary

__all__ = ["evaluate_reviewed"]


def evaluate_reviewed(model, db_path: str | Path, cfg: Optional[EvalConfig] = None) -> EvalResult:
    """Classify every region experts accepted or corrected, over the reviewed vocabulary (see :func:`evaluate_regions`)."""
    vocab = reviewed_vocabulary(db_path)
    regions = [
        LabelledRegion(r.image_path, tuple(r.box), vocab.index(r.category), r.mask_rle)
        for r in load_reviewed_regions(db_path)
        if r.status in ("accepted", "corrected") and r.category
    ]
    return evaluate_regions(model, regions, vocab, cfg)
