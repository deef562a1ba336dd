"""Expert verdicts for their consumers (training targets, a labelled held-out set): a
:class:`~densevlm.regions.labelled.LabelledRegion` per reviewed region.

Verdicts are resolved over reviewers as in :mod:`densevlm.review.resolve` (majority of current
verdicts, ties to the most recent). Boxes are XYXY in original image pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from densevlm.regions.labelled import LabelledRegion
from densevlm.review.resolve import resolved_regions
from densevlm.review.store import ReviewStore
from densevlm.vocab.vocabulary import Vocabulary

__all__ = ["ReviewedSet", "load_reviewed"]


@dataclass
class ReviewedSet:
    """Reviewed regions and the vocabulary that holds their categories: the header's classes plus
    those reviewers added. ``category`` and ``thing`` are None for ``rejected`` and ``unsure``."""

    vocab: Vocabulary
    regions: list[LabelledRegion]
    smoothing: float = 0.05


def load_reviewed(db_path: str | Path) -> ReviewedSet:
    """Every region with at least one current verdict, resolved by majority (ties: most recent), and its vocabulary.

    The vocabulary has every class of the database in its section (things, then stuff), in the
    order they were added, and the ``[defects]`` the imports' headers list; ``image_path`` is absolute.
    """
    with ReviewStore(db_path) as store:
        classes = store.classes()
        defects = store.defect_names()
        resolved = resolved_regions(store)
    vocab = Vocabulary.from_lists([c["synonyms"] for c in classes if c["thing"]],
                                  [c["synonyms"] for c in classes if not c["thing"]], defects=defects)
    regions = [
        LabelledRegion(
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
    return ReviewedSet(vocab, regions)
