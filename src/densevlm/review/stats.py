"""Review statistics: how often the teacher's top-1 is right, from which confidence on it can be trusted, reviewer pace.

Definitions (verdicts resolved over reviewers by majority, ties to the most recent):

* *decided* regions are those resolved as accepted, corrected or rejected (unsure ones have no
  expert answer). The teacher is *right* on a decided region when it is accepted (its top-1 is
  the experts' category); corrected and rejected regions count as wrong.
* *agreement* is right / decided, overall and per teacher top-1 category.
* the *trusted threshold* is the lowest confidence t such that, among decided regions with
  confidence >= t, the teacher is right at least 95 % of the time; ``covers`` is how many
  decided regions that is. None when no t reaches 95 %.
* *throughput* per reviewer: their verdicts that were not undone, divided by their active span
  (minutes from their first to their last verdict); None when the span is zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from densevlm.review.resolve import resolved_regions
from densevlm.review.store import STATUSES, ReviewStore

__all__ = ["review_stats", "trusted_threshold", "format_stats", "TARGET_PRECISION"]

TARGET_PRECISION = 0.95
_DECIDED = ("accepted", "corrected", "rejected")


def _rate(part: int, whole: int) -> Optional[float]:
    return part / whole if whole else None


def trusted_threshold(scored: list[tuple[float, bool]], target: float = TARGET_PRECISION) -> dict:
    """Lowest confidence t with precision >= ``target`` over items with confidence >= t.

    ``scored`` is (confidence, teacher right) per decided region. Returns ``{"threshold": t or
    None, "covers": n, "precision": p or None, "target": target}``.
    """
    ordered = sorted(scored, key=lambda item: item[0], reverse=True)
    best: dict = {"threshold": None, "covers": 0, "precision": None, "target": target}
    right = total = 0
    i = 0
    while i < len(ordered):
        confidence = ordered[i][0]
        while i < len(ordered) and ordered[i][0] == confidence:
            right += int(ordered[i][1])
            total += 1
            i += 1
        # right / total >= target, compared in integers so that exactly 95 % counts
        if right * 10000 >= round(target * 10000) * total:
            best = {"threshold": confidence, "covers": total, "precision": right / total, "target": target}
    return best


def review_stats(db_path: str | Path) -> dict:
    """Agreement of the teacher's top-1 with experts, trusted threshold, throughput, counts by status.

    Keys: ``regions`` (total, reviewed, unreviewed), ``status`` (count per resolved status and
    'unreviewed'), ``agreement`` (overall: decided, right, rate), ``per_category`` (per teacher
    top-1 class: regions, reviewed, decided, accepted, corrected, rejected, unsure, agreement),
    ``corrections`` (teacher top-1 -> expert outcome, count; most frequent first),
    ``trusted_threshold`` (see :func:`trusted_threshold`), ``reviewers`` (per reviewer: verdicts,
    first, last (Unix seconds), active_minutes, per_minute), ``verdict_rows`` (history rows).
    """
    with ReviewStore(db_path) as store:
        regions = resolved_regions(store, include_unreviewed=True)
        classes = store.classes()
        with store.snapshot() as conn:
            rows = conn.execute(
                "SELECT reviewer, COUNT(*) AS n, MIN(created_at) AS first, MAX(created_at) AS last"
                " FROM verdicts WHERE undone_at IS NULL GROUP BY reviewer ORDER BY reviewer"
            ).fetchall()
            verdict_rows = conn.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]

    status = {s: 0 for s in (*STATUSES, "unreviewed")}
    for r in regions:
        status[r["status"]] += 1
    decided = [r for r in regions if r["status"] in _DECIDED]
    right = sum(r["status"] == "accepted" for r in decided)

    per_category = []
    for cls in classes:
        mine = [r for r in regions if r["teacher_top1"] == cls["name"]]
        if not mine:
            continue
        counts = {s: sum(r["status"] == s for r in mine) for s in STATUSES}
        n_decided = counts["accepted"] + counts["corrected"] + counts["rejected"]
        per_category.append(
            {
                "category": cls["name"],
                "regions": len(mine),
                "reviewed": len(mine) - sum(r["status"] == "unreviewed" for r in mine),
                "decided": n_decided,
                **counts,
                "agreement": _rate(counts["accepted"], n_decided),
            }
        )

    corrections: dict[tuple[str, str], int] = {}
    for r in decided:
        if r["status"] == "accepted":
            continue
        outcome = r["category"] if r["status"] == "corrected" else "rejected"
        pair = (r["teacher_top1"], outcome)
        corrections[pair] = corrections.get(pair, 0) + 1

    reviewers = []
    for row in rows:
        minutes = (row["last"] - row["first"]) / 60.0
        reviewers.append(
            {
                "reviewer": row["reviewer"],
                "verdicts": row["n"],
                "first": row["first"],
                "last": row["last"],
                "active_minutes": minutes,
                "per_minute": row["n"] / minutes if minutes > 0 else None,
            }
        )

    return {
        "regions": {"total": len(regions), "reviewed": len(regions) - status["unreviewed"], "unreviewed": status["unreviewed"]},
        "status": status,
        "agreement": {"decided": len(decided), "right": right, "rate": _rate(right, len(decided))},
        "per_category": per_category,
        "corrections": [
            {"teacher": t, "expert": e, "count": n}
            for (t, e), n in sorted(corrections.items(), key=lambda item: (-item[1], item[0]))
        ],
        "trusted_threshold": trusted_threshold([(r["confidence"], r["status"] == "accepted") for r in decided]),
        "reviewers": reviewers,
        "verdict_rows": verdict_rows,
    }


def _pct(rate: Optional[float]) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f} %"


def format_stats(stats: dict) -> str:
    """The statistics as a short plain-text summary."""
    regions = stats["regions"]
    lines = [f"regions: {regions['total']} ({regions['reviewed']} reviewed, {regions['unreviewed']} not yet)"]
    lines.append("status: " + ", ".join(f"{s} {n}" for s, n in stats["status"].items()))
    agree = stats["agreement"]
    lines.append(f"teacher top-1 agrees with the experts: {agree['right']} / {agree['decided']} = {_pct(agree['rate'])}")
    for c in stats["per_category"]:
        lines.append(
            f"  {c['category']}: {c['accepted']} / {c['decided']} = {_pct(c['agreement'])}"
            f" (corrected {c['corrected']}, rejected {c['rejected']}, unsure {c['unsure']}, {c['regions']} regions)"
        )
    for c in stats["corrections"][:10]:
        lines.append(f"  correction: {c['teacher']} -> {c['expert']} ({c['count']}x)")
    t = stats["trusted_threshold"]
    target = f"{100 * t['target']:.0f} %"
    if t["threshold"] is None:
        lines.append(f"confidence above which the teacher is right >= {target}: none")
    else:
        lines.append(
            f"confidence above which the teacher is right >= {target}: {t['threshold']:.4g}"
            f" (covers {t['covers']} of {agree['decided']} decided regions, precision {_pct(t['precision'])})"
        )
    for r in stats["reviewers"]:
        pace = "n/a" if r["per_minute"] is None else f"{r['per_minute']:.2f}"
        lines.append(f"reviewer {r['reviewer']}: {r['verdicts']} verdicts over {r['active_minutes']:.1f} min = {pace} per minute")
    return "\n".join(lines)
