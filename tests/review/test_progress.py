"""Review progress: totals, per teacher top-1 category and per status."""

from __future__ import annotations

from densevlm.review import session
from densevlm.review.progress import review_progress
from densevlm.review.store import ReviewStore

from .conftest import region_id


def test_progress_counts_per_category_and_status(imported):
    with ReviewStore(imported.db) as store:
        first = region_id(store, "c.png#0")
        session.add_verdict(store, first, "bob", "rejected")
        session.add_verdict(store, first, "ann", "category", "bolt")
        progress = review_progress(store, "ann")
    assert (progress["total"], progress["reviewed"], progress["mine"]) == (8, 1, 1)
    bolt = next(c for c in progress["by_category"] if c["category"] == "bolt")
    assert (bolt["total"], bolt["reviewed"], bolt["mine"]) == (2, 1, 1)
    assert progress["verdicts_by_status"] == {"accepted": 1, "corrected": 0, "rejected": 1, "unsure": 0}
