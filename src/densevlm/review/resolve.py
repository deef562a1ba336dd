"""Verdicts resolved over reviewers: the majority of their current verdicts, and where they disagree.

Each reviewer's current verdict on a region (their newest one not undone) is one vote for an
outcome: a class, 'rejected' or 'unsure' (a class named 'unsure' stays a class). The outcome with
most votes wins; a tie goes to the outcome of the most recent verdict.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Sequence

from densevlm.review.store import ReviewStore

__all__ = ["conflicts", "resolved_regions"]


def resolved_regions(store: ReviewStore, include_unreviewed: bool = False) -> list[dict]:
    """Every region (with ``include_unreviewed``, also those nobody judged) with its resolved verdict, in region order.

    Keys: ``id`` (db), ``key``, ``image_id``, ``image``, ``image_path``, ``width``, ``height``, ``box`` XYXY pixels,
    ``mask``, ``confidence``, ``kept``, ``teacher`` (name), ``teacher_top1``, ``teacher_thing``, ``status`` (one of
    STATUSES, or 'unreviewed'), ``category``, ``thing``, ``reviewer``, ``reviewers``,
    ``votes`` (reviewer -> outcome), ``reviewed_at``.
    """
    with store.snapshot() as conn:
        regions = conn.execute(
            """
            SELECT r.*, i.root, i.file_name, i.width, i.height, k.name AS top1, k.thing AS top1_thing,
                   m.teacher
            FROM regions r JOIN images i ON i.id = r.image_id
            JOIN imports m ON m.id = r.import_id
            JOIN candidates c ON c.region_id = r.id AND c.rank = 0
            JOIN classes k ON k.id = c.class_id
            ORDER BY r.id
            """
        ).fetchall()
        votes: dict[int, list[sqlite3.Row]] = {}
        for row in conn.execute(
            "SELECT v.*, k.name AS category, k.thing AS class_thing FROM current_verdicts v"
            " LEFT JOIN classes k ON k.id = v.class_id ORDER BY v.region_id, v.created_at, v.id"
        ):
            votes.setdefault(row["region_id"], []).append(row)
    out = []
    for r in regions:
        item = {
            "id": r["id"],
            "key": r["key"],
            "image_id": r["image_id"],
            "image": r["file_name"],
            "image_path": str(Path(r["root"]) / r["file_name"]),
            "width": r["width"],
            "height": r["height"],
            "box": [r["x1"], r["y1"], r["x2"], r["y2"]],
            "mask": json.loads(r["mask"]) if r["mask"] else None,
            "confidence": r["confidence"],
            "kept": bool(r["kept"]),
            "teacher": r["teacher"],
            "teacher_top1": r["top1"],
            "teacher_thing": bool(r["top1_thing"]),
            "status": "unreviewed",
            "category": None,
            "thing": None,
            "reviewer": None,
            "reviewers": [],
            "votes": {},
            "reviewed_at": None,
        }
        region_votes = votes.get(r["id"])
        if not region_votes:
            if include_unreviewed:
                out.append(item)
            continue
        item.update(_resolve(region_votes))
        out.append(item)
    return out


def conflicts(store: ReviewStore) -> list[dict]:
    """Regions where reviewers' current verdicts disagree (different status or category)."""
    with store.snapshot() as conn:
        rows = conn.execute(
            """
            SELECT v.*, r.key, k.name AS category FROM current_verdicts v
            JOIN regions r ON r.id = v.region_id
            LEFT JOIN classes k ON k.id = v.class_id
            WHERE v.region_id IN (
                SELECT region_id FROM current_verdicts GROUP BY region_id
                HAVING COUNT(DISTINCT status || ':' || COALESCE(class_id, '')) > 1)
            ORDER BY v.region_id, v.reviewer
            """
        ).fetchall()
    by_region: dict[int, dict] = {}
    for row in rows:
        item = by_region.setdefault(row["region_id"], {"region_id": row["region_id"], "key": row["key"], "verdicts": []})
        item["verdicts"].append(
            {"reviewer": row["reviewer"], "status": row["status"], "category": row["category"], "created_at": row["created_at"]}
        )
    return list(by_region.values())


def _outcome(row: sqlite3.Row) -> tuple[str, int]:
    """What a verdict says: ('class', class id) or (status, 0), so that a class named 'unsure' stays a class."""
    return ("class", row["class_id"]) if row["class_id"] is not None else (row["status"], 0)


def _resolve(votes: Sequence[sqlite3.Row]) -> dict:
    """Majority of current verdicts; ties broken by the most recent verdict (votes are in time order)."""
    tally: dict[tuple[str, int], int] = {}
    latest: dict[tuple[str, int], int] = {}
    for position, row in enumerate(votes):
        outcome = _outcome(row)
        tally[outcome] = tally.get(outcome, 0) + 1
        latest[outcome] = position
    best = max(tally, key=lambda o: (tally[o], latest[o]))
    deciding = votes[latest[best]]
    has_class = deciding["class_id"] is not None
    return {
        "status": deciding["status"],
        "category": deciding["category"] if has_class else None,
        "thing": bool(deciding["class_thing"]) if has_class else None,
        "reviewer": deciding["reviewer"],
        "reviewers": sorted({row["reviewer"] for row in votes if _outcome(row) == best}),
        "votes": {row["reviewer"]: row["category"] or row["status"] for row in votes},
        "reviewed_at": deciding["created_at"],
    }
