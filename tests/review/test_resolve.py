"""Verdicts resolved over reviewers: conflicts, majority, ties to the most recent verdict."""

from __future__ import annotations

import pytest

from densevlm.review import resolve, session
from densevlm.review.reviewed import load_reviewed
from densevlm.review.store import ReviewStore

from .conftest import region_id


def test_conflicts_and_majority(imported):
    with ReviewStore(imported.db) as store:
        a, b, c = (region_id(store, k) for k in ("a.png#0", "a.png#1", "c.png#0"))
        session.add_verdict(store, a, "ann", "category", "bolt", at=100.0)
        session.add_verdict(store, a, "bob", "category", "nut", at=101.0)
        session.add_verdict(store, a, "cy", "category", "bolt", at=102.0)
        session.add_verdict(store, b, "ann", "rejected", at=103.0)
        session.add_verdict(store, b, "bob", "category", "bolt", at=104.0)  # tie: the most recent wins
        session.add_verdict(store, c, "ann", "unsure", at=105.0)
        session.add_verdict(store, c, "bob", "unsure", at=106.0)
        conflicts = {item["key"]: item for item in resolve.conflicts(store)}
    assert set(conflicts) == {"a.png#0", "a.png#1"}
    assert {v["reviewer"]: v["category"] for v in conflicts["a.png#0"]["verdicts"]} == {"ann": "bolt", "bob": "nut", "cy": "bolt"}
    resolved = {r.region_id: r for r in load_reviewed(imported.db).regions}
    assert set(resolved) == {"a.png#0", "a.png#1", "c.png#0"}
    first = resolved["a.png#0"]
    assert (first.status, first.category, first.thing, first.reviewer, first.reviewers) == (
        "accepted", "bolt", True, "cy", ("ann", "cy"))
    assert first.image_path == str(imported.images.resolve() / "a.png")
    assert first.box == (4.0, 4.0, 20.0, 20.0) and first.mask_rle is None
    assert (first.teacher_top1, first.teacher_confidence) == ("bolt", pytest.approx(0.81))
    tie = resolved["a.png#1"]
    assert (tie.status, tie.category, tie.reviewer) == ("corrected", "bolt", "bob")
    assert tie.mask_rle["size"] == [64, 64]
    unsure = resolved["c.png#0"]
    assert (unsure.status, unsure.category, unsure.thing) == ("unsure", None, None)
