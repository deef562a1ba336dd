"""Expert verdicts for their consumers (training targets, a labelled held-out set): one record per reviewed region.

Verdicts are resolved over reviewers as in :mod:`densevlm.review.resolve` (majority of current
verdicts, ties to the most recent). Boxes are XYXY in original image pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from densevlm.review.resolve import resolved_regions
from densevlm.review.store import ReviewStore
from densevlm.vocab.vocabulary import Vocabulary

__all__ = ["ReviewedRegion", "ReviewedSet", "load_reviewed"]


@dataclass(frozen=True)
class ReviewedRegion:
    """A region with its resolved expert verdict.

    ``box`` is XYXY in original image pixels; ``mask_rle`` a COCO compressed RLE dict
    (``counts`` a str) or None. When several reviewers judged a region, the majority of their
    current verdicts wins (ties: the most recent verdict). ``category``, ``label`` (its index in
    the :class:`ReviewedSet`'s vocabulary) and ``thing`` are None for ``rejected`` and ``unsure``.
    ``reviewer`` is the reviewer of the deciding verdict, ``reviewers`` everyone whose current
    verdict agrees with it; ``reviewed_at`` is Unix seconds.
    """

    region_id: str
    image_path: str
    width: int
    height: int
    box: tuple[float, float, float, float]
    mask_rle: Optional[dict]
    status: str
    category: Optional[str]
    label: Optional[int]
    thing: Optional[bool]
    teacher_top1: str
    teacher_confidence: float
    reviewer: str
    reviewers: tuple[str, ...] = ()
    reviewed_at: float = 0.0

    @property
    def rejected(self) -> bool:
        """The experts said this is not a region."""
        return self.status == "rejected"


@dataclass
class ReviewedSet:
    """Reviewed regions and the vocabulary their labels index: the header's classes plus those reviewers added."""

    vocab: Vocabulary
    regions: list[ReviewedRegion]
    smoothing: float = 0.05


def load_reviewed(db_path: str | Path) -> ReviewedSet:
    """Every region with at least one current verdict, resolved by majority (ties: most recent), and its vocabulary.

    The vocabulary has every class of the database in its section (things, then stuff), in the
    order they were added; ``image_path`` is absolute.
    """
    with ReviewStore(db_path) as store:
        classes = store.classes()
        resolved = resolved_regions(store)
    vocab = Vocabulary.from_lists([c["synonyms"] for c in classes if c["thing"]],
                                  [c["synonyms"] for c in classes if not c["thing"]])
    regions = [
        ReviewedRegion(
            region_id=r["key"],
            image_path=r["image_path"],
            width=r["width"],
            height=r["height"],
            box=tuple(r["box"]),
            mask_rle=r["mask"],
            status=r["status"],
            category=r["category"],
            label=vocab.index(r["category"]) if r["category"] else None,
            thing=r["thing"],
            teacher_top1=r["teacher_top1"],
            teacher_confidence=r["confidence"],
            reviewer=r["reviewer"],
            reviewers=tuple(r["reviewers"]),
            reviewed_at=r["reviewed_at"],
        )
        for r in resolved
    ]
    return ReviewedSet(vocab, regions)
