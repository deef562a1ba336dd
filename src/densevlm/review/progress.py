"""How far the review is: regions in total, reviewed by anyone, reviewed by one reviewer; per category and status.

A region counts as reviewed when it has at least one verdict that was not undone.
"""

from __future__ import annotations

from typing import Optional

from densevlm.review.session import clean_reviewer
from densevlm.review.store import STATUSES, ReviewStore

__all__ = ["review_progress"]


def review_progress(store: ReviewStore, reviewer: Optional[str] = None) -> dict:
    """Counts: regions in total, reviewed by anyone, reviewed by ``reviewer``; per teacher top-1 category."""
    reviewer = clean_reviewer(reviewer) if reviewer else None
    with store.snapshot() as conn:
        rows = conn.execute(
            """
            SELECT k.name AS category,
                   COUNT(*) AS total,
                   SUM(EXISTS (SELECT 1 FROM verdicts v WHERE v.region_id = r.id AND v.undone_at IS NULL)) AS reviewed,
                   SUM(EXISTS (SELECT 1 FROM verdicts v WHERE v.region_id = r.id AND v.undone_at IS NULL
                               AND v.reviewer = ?)) AS mine
            FROM regions r
            JOIN candidates c ON c.region_id = r.id AND c.rank = 0
            JOIN classes k ON k.id = c.class_id
            GROUP BY k.id ORDER BY k.id
            """,
            (reviewer or "",),
        ).fetchall()
        statuses = {s: 0 for s in STATUSES}
        for row in conn.execute("SELECT status, COUNT(*) AS n FROM current_verdicts GROUP BY status"):
            statuses[row["status"]] = row["n"]
    by_category = [
        {"category": r["category"], "total": r["total"], "reviewed": r["reviewed"], "mine": r["mine"]} for r in rows
    ]
    return {
        "total": sum(c["total"] for c in by_category),
        "reviewed": sum(c["reviewed"] for c in by_category),
        "mine": sum(c["mine"] for c in by_category) if reviewer else None,
        "reviewer": reviewer,
        "verdicts_by_status": statuses,
        "by_category": by_category,
    }
