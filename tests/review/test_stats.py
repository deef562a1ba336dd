"""Statistics on a hand-made review where every number is known."""

from __future__ import annotations

import pytest

from densevlm.review.stats import format_stats, review_stats, trusted_threshold
from densevlm.review import session
from densevlm.review.importing import import_candidates
from densevlm.review.store import ReviewStore

from .conftest import header, region, write_candidates

T0 = 1_700_000_000.0
# decided regions 0..23 with confidence 0.99 - 0.01 i; teacher top-1 bolt (even i) or nut (odd i)
WRONG = {9: ("category", "bolt"), 20: ("category", "nut"), 21: ("rejected", None), 22: ("rejected", None), 23: ("category", "washer")}


@pytest.fixture
def known(dataset):
    regions = []
    for i in range(26):
        top1, other = ("bolt", "nut") if i % 2 == 0 else ("nut", "bolt")
        conf = round(0.99 - 0.01 * i, 2) if i < 24 else {24: 0.5, 25: 0.4}[i]
        regions.append(region(f"r{i:02d}", "a.png", (64, 64), [float(i), 0.0, float(i) + 4.0, 4.0], [(top1, conf), (other, conf / 2)]))
    path = write_candidates(dataset.root / "known.jsonl", header(dataset.images), regions)
    import_candidates(dataset.db, path)
    with ReviewStore(dataset.db) as store:
        ids = {r["key"]: r["id"] for r in store.conn.execute("SELECT id, key FROM regions")}
        for i in range(24):
            reviewer, at = ("ann", T0 + 30.0 * i) if i < 12 else ("bob", T0 + 60.0 * (i - 12))
            verdict, category = WRONG.get(i, ("category", "bolt" if i % 2 == 0 else "nut"))
            session.add_verdict(store, ids[f"r{i:02d}"], reviewer, verdict, category, thing=True, at=at)
        session.add_verdict(store, ids["r24"], "bob", "unsure", at=T0 + 60.0 * 12)
        session.add_verdict(store, ids["r25"], "bob", "rejected", at=T0 + 10_000.0)
        session.undo(store, "bob")  # undone verdicts count nowhere: r25 stays unreviewed
    return dataset


def test_review_stats_on_known_review(known):
    stats = review_stats(known.db)
    assert stats["regions"] == {"total": 26, "reviewed": 25, "unreviewed": 1}
    assert stats["status"] == {"accepted": 19, "corrected": 3, "rejected": 2, "unsure": 1, "unreviewed": 1}
    assert stats["agreement"]["decided"] == 24 and stats["agreement"]["right"] == 19
    assert stats["agreement"]["rate"] == pytest.approx(19 / 24)
    per = {c["category"]: c for c in stats["per_category"]}
    assert set(per) == {"bolt", "nut"}
    assert (per["bolt"]["decided"], per["bolt"]["accepted"], per["bolt"]["corrected"], per["bolt"]["rejected"]) == (12, 10, 1, 1)
    assert per["bolt"]["agreement"] == pytest.approx(10 / 12)
    assert (per["nut"]["regions"], per["nut"]["decided"], per["nut"]["accepted"], per["nut"]["unsure"]) == (13, 12, 9, 0)
    assert per["bolt"]["unsure"] == 1 and per["bolt"]["regions"] == 13
    assert per["nut"]["agreement"] == pytest.approx(9 / 12)
    assert {(c["teacher"], c["expert"]): c["count"] for c in stats["corrections"]} == {
        ("nut", "bolt"): 1,
        ("bolt", "nut"): 1,
        ("nut", "rejected"): 1,
        ("bolt", "rejected"): 1,
        ("nut", "washer"): 1,
    }
    # the top 20 regions (confidence >= 0.80) hold exactly one mistake: 19 / 20 = 95 %
    threshold = stats["trusted_threshold"]
    assert threshold["threshold"] == pytest.approx(0.80)
    assert threshold["covers"] == 20 and threshold["precision"] == pytest.approx(0.95)
    reviewers = {r["reviewer"]: r for r in stats["reviewers"]}
    assert reviewers["ann"]["verdicts"] == 12 and reviewers["ann"]["active_minutes"] == pytest.approx(5.5)
    assert reviewers["ann"]["per_minute"] == pytest.approx(12 / 5.5)
    assert reviewers["bob"]["verdicts"] == 13 and reviewers["bob"]["active_minutes"] == pytest.approx(12.0)
    assert reviewers["bob"]["per_minute"] == pytest.approx(13 / 12)
    assert stats["verdict_rows"] == 26

    text = format_stats(stats)
    assert "teacher top-1 agrees with the experts: 19 / 24 = 79.2 %" in text
    assert "0.8 (covers 20 of 24 decided regions" in text
    assert "reviewer ann: 12 verdicts over 5.5 min = 2.18 per minute" in text


@pytest.mark.parametrize(
    "scored, expected",
    [
        ([], (None, 0)),
        ([(0.9, False), (0.8, True)], (None, 0)),
        ([(0.9, True), (0.8, False)], (0.9, 1)),
        ([(0.9, True)] * 19 + [(0.5, False)], (0.5, 20)),
        ([(0.9, True)] * 18 + [(0.5, False)], (0.9, 18)),
        # regions with equal confidence count together: at t = 0.5 all three are in, 20 / 22 < 95 %
        ([(0.9, True)] * 19 + [(0.5, True), (0.5, False), (0.5, False)], (0.9, 19)),
        # precision is not monotonic in t: the lowest t that reaches 95 % wins
        ([(0.99, False)] + [(0.9, True)] * 30 + [(0.1, False)], (0.9, 31)),
    ],
)
def test_trusted_threshold(scored, expected):
    result = trusted_threshold(scored)
    assert (result["threshold"], result["covers"]) == expected


def test_no_threshold_says_none(dataset):
    import_candidates(dataset.db, dataset.candidates)
    with ReviewStore(dataset.db) as store:
        first = session.next_region(store, "ann")
        session.add_verdict(store, first["id"], "ann", "rejected")
    stats = review_stats(dataset.db)
    assert stats["trusted_threshold"]["threshold"] is None
    assert "right >= 95 %: none" in format_stats(stats)
    assert stats["reviewers"][0]["per_minute"] is None  # one verdict has no span
