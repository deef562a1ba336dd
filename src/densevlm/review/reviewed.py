"""Expert verdicts for their consumers: resolved regions as records, training targets, and their vocabulary.

Verdicts are resolved over reviewers as in :mod:`densevlm.review.resolve` (majority of current
verdicts, ties to the most recent). Boxes are XYXY in original image pixels. Training reads
:func:`load_reviewed` (:class:`ReviewedSet`); evaluation reads :func:`load_reviewed_regions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from densevlm.review.resolve import resolved_regions
from densevlm.review.store import ReviewStore
from densevlm.vocab.vocabulary import Vocabulary

__all__ = ["ReviewedRegion", "ReviewedSet", "ReviewedTarget", "load_reviewed", "load_reviewed_regions", "reviewed_vocabulary"]


@dataclass(frozen=True)
class ReviewedRegion:
    """A region with its resolved expert verdict.

    ``box`` is XYXY in original image pixels; ``mask_rle`` a COCO compressed RLE dict
    (``counts`` a str) or None. When several reviewers judged a region, the majority of their
    current verdicts wins (ties: the most recent verdict). ``category`` and ``thing`` are None
    for ``rejected`` and ``unsure``. ``reviewer`` is the reviewer of the deciding verdict,
    ``reviewers`` everyone whose current verdict agrees with it; ``reviewed_at`` is Unix seconds.
    """

    region_id: str
    image_path: str
    width: int
    height: int
    box: tuple[float, float, float, float]
    mask_rle: Optional[dict]
    status: str
    category: Optional[str]
    thing: Optional[bool]
    teacher_top1: str
    teacher_confidence: float
    reviewer: str
    reviewers: tuple[str, ...] = ()
    reviewed_at: float = 0.0


@dataclass
class ReviewedTarget:
    """An expert verdict on one region of a training image.

    Attributes:
        image_path: the image file (matched against the training source's files).
        width, height: the image's original size in pixels.
        box: XYXY in original pixels.
        label: vocabulary index of the accepted or corrected category; None for ``unsure``
            (the teacher decides) and for ``rejected``.
        rejected: the expert said this is not a region: it is dropped.
    """

    image_path: str
    width: int
    height: int
    box: tuple[float, float, float, float]
    label: Optional[int]
    rejected: bool = False


@dataclass
class ReviewedSet:
    """Expert verdicts and the vocabulary they refer to (which may extend the original one)."""

    vocab: Vocabulary
    targets: list[ReviewedTarget]
    smoothing: float = 0.05


def load_reviewed_regions(db_path: str | Path) -> list[ReviewedRegion]:
    """Every region with at least one current verdict, resolved by majority (ties: most recent).

    Boxes are XYXY in original image pixels; ``image_path`` is absolute.
    """
    with ReviewStore(db_path) as store:
        resolved = resolved_regions(store)
    return [
        ReviewedRegion(
            region_id=r["key"],
            image_path=r["image_path"],
            width=r["width"],
            height=r["height"],
            box=tuple(r["box"]),
            mask_rle=r["mask"],
            status=r["status"],
            category=r["category"],
            thing=r["thing"],
            teacher_top1=r["teacher_top1"],
            teacher_confidence=r["confidence"],
            reviewer=r["reviewer"],
            reviewers=tuple(r["reviewers"]),
            reviewed_at=r["reviewed_at"],
        )
        for r in resolved
    ]


def reviewed_vocabulary(db_path: str | Path) -> Vocabulary:
    """The header vocabulary plus classes reviewers added, each in its section (things, then stuff)."""
    with ReviewStore(db_path) as store:
        classes = store.classes()
    things = [c["synonyms"] for c in classes if c["thing"]]
    stuff = [c["synonyms"] for c in classes if not c["thing"]]
    return Vocabulary.from_lists(things, stuff)


def load_reviewed(db_path: str | Path) -> ReviewedSet:
    """Expert verdicts as training targets, with labels indexing :func:`reviewed_vocabulary`."""
    vocab = reviewed_vocabulary(db_path)
    targets = []
    for r in load_reviewed_regions(db_path):
        label = vocab.index(r.category) if r.category else None
        targets.append(ReviewedTarget(r.image_path, r.width, r.height, tuple(r.box), label, rejected=r.status == "rejected"))
    return ReviewedSet(vocab, targets)
