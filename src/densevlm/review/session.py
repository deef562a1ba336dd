"""The review session: what a reviewer sees next, a region as the page shows it, verdicts, undo, history.

Every function takes an open :class:`~densevlm.review.store.ReviewStore`. Boxes are XYXY in
original image pixels; times are Unix seconds. Writes are one transaction each and return once committed.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from densevlm.errors import DenseVLMError
from densevlm.regions.rle import rle_counts
from densevlm.review.candidates import clean_name
from densevlm.review.store import ReviewStore

__all__ = ["RegionNotFound", "add_class", "add_verdict", "clean_reviewer", "history", "image_file", "next_region", "region", "undo"]

logger = logging.getLogger(__name__)

VERDICTS = ("category", "rejected", "unsure")
MAX_NAME_LENGTH = 80


class RegionNotFound(LookupError):
    """No region has this database id."""


def clean_reviewer(name: Optional[str]) -> str:
    """A reviewer name with whitespace collapsed; DenseVLMError when empty or longer than 64 characters."""
    cleaned = " ".join((name or "").split())
    if not cleaned:
        raise DenseVLMError("reviewer name is empty")
    if len(cleaned) > 64 or not cleaned.isprintable():
        raise DenseVLMError("reviewer name must be at most 64 printable characters")
    return cleaned


def next_region(store: ReviewStore, reviewer: str, category: Optional[str] = None, max_conf: Optional[float] = None,
                min_conf: Optional[float] = None, order: str = "asc", exclude: Iterable[int] = ()) -> Optional[dict]:
    """The next region ``reviewer`` has no current verdict on, or None when all are done.

    Regions nobody has judged come first, then by teacher confidence (``order`` 'asc':
    low confidence first; 'desc': high first). ``category`` keeps regions whose teacher top-1
    is that class; ``min_conf``/``max_conf`` bound the confidence (inclusive); ``exclude``
    skips database region ids.
    """
    reviewer = clean_reviewer(reviewer)
    where = ["NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.region_id = r.id AND v.reviewer = ? AND v.undone_at IS NULL)"]
    params: list[Any] = [reviewer]
    if category:
        cls = store.find_class(category)
        if cls is None:
            return None
        where.append("EXISTS (SELECT 1 FROM candidates c WHERE c.region_id = r.id AND c.rank = 0 AND c.class_id = ?)")
        params.append(cls["id"])
    if max_conf is not None:
        where.append("r.confidence <= ?")
        params.append(max_conf)
    if min_conf is not None:
        where.append("r.confidence >= ?")
        params.append(min_conf)
    excluded = sorted({int(i) for i in exclude})
    if excluded:
        where.append(f"r.id NOT IN ({', '.join('?' * len(excluded))})")
        params.extend(excluded)
    direction = "DESC" if order == "desc" else "ASC"
    row = store.conn.execute(
        "SELECT r.id FROM regions r WHERE " + " AND ".join(where)
        + " ORDER BY EXISTS (SELECT 1 FROM verdicts v WHERE v.region_id = r.id AND v.undone_at IS NULL),"
        f" r.confidence {direction}, r.id LIMIT 1",
        params,
    ).fetchone()
    return None if row is None else region(store, row["id"], reviewer)


def region(store: ReviewStore, region_id: int, reviewer: Optional[str] = None) -> Optional[dict]:
    """A region as the page shows it (box XYXY pixels, mask runs, candidates), or None.

    ``mask_runs`` are the mask's uncompressed column-major run lengths (background first).
    ``my_verdict`` is ``reviewer``'s current verdict; ``verdicts`` counts everyone's.
    """
    with store.snapshot() as conn:
        row = conn.execute(
            "SELECT r.*, i.file_name, i.width, i.height FROM regions r JOIN images i ON i.id = r.image_id WHERE r.id = ?",
            (region_id,),
        ).fetchone()
        if row is None:
            return None
        cands = conn.execute(
            "SELECT c.prob, k.name, k.thing FROM candidates c JOIN classes k ON k.id = c.class_id"
            " WHERE c.region_id = ? ORDER BY c.rank",
            (region_id,),
        ).fetchall()
        mine = None
        if reviewer and reviewer.strip():
            mine = conn.execute(
                "SELECT * FROM current_verdicts WHERE region_id = ? AND reviewer = ?",
                (region_id, clean_reviewer(reviewer)),
            ).fetchone()
            mine = _verdict_dict(conn, mine) if mine is not None else None
        count = conn.execute("SELECT COUNT(*) FROM current_verdicts WHERE region_id = ?", (region_id,)).fetchone()[0]
    mask = json.loads(row["mask"]) if row["mask"] else None
    return {
        "id": row["id"],
        "key": row["key"],
        "image_id": row["image_id"],
        "image": row["file_name"],
        "image_url": f"/api/images/{row['image_id']}",
        "width": row["width"],
        "height": row["height"],
        "box": [row["x1"], row["y1"], row["x2"], row["y2"]],
        "mask": mask,
        "mask_runs": rle_counts(mask["counts"]) if mask else None,
        "confidence": row["confidence"],
        "thing": bool(row["thing"]),
        "kept": bool(row["kept"]),
        "candidates": [{"category": c["name"], "prob": c["prob"], "thing": bool(c["thing"])} for c in cands],
        "my_verdict": mine,
        "verdicts": count,
    }


def image_file(store: ReviewStore, image_id: int) -> Optional[Path]:
    """The file of an imported image (by database id), or None when unknown or missing.

    The path is the imported root joined with the file name checked at import (relative,
    no '..'); symlinks inside the images directory are followed.
    """
    row = store.conn.execute("SELECT root, file_name FROM images WHERE id = ?", (image_id,)).fetchone()
    if row is None:
        return None
    root = Path(row["root"])
    path = Path(os.path.normpath(root / row["file_name"]))
    if root not in path.parents or not path.is_file():
        return None
    return path


def add_verdict(store: ReviewStore, region_id: int, reviewer: str, verdict: str, category: Optional[str] = None,
                thing: Optional[bool] = None, at: Optional[float] = None) -> dict:
    """Record ``reviewer``'s verdict on a region; returns it once the transaction has committed.

    ``verdict`` is 'category' (then ``category`` names a class or synonym; an unknown name
    becomes a new class and needs ``thing``), 'rejected' (not a region) or 'unsure'.
    ``at`` is Unix seconds (default: now). Raises DenseVLMError on bad input.
    """
    reviewer = clean_reviewer(reviewer)
    if verdict not in VERDICTS:
        raise DenseVLMError(f"verdict must be one of {', '.join(VERDICTS)}, got '{verdict}'")
    now = time.time() if at is None else float(at)
    with store.transaction() as conn:
        top1 = conn.execute("SELECT class_id FROM candidates WHERE region_id = ? AND rank = 0", (region_id,)).fetchone()
        if top1 is None:
            raise RegionNotFound(region_id)
        class_id = None
        new_class = False
        if verdict == "category":
            class_id, new_class = _class_for_verdict(store, conn, category, thing, reviewer, now)
            status = "accepted" if class_id == top1["class_id"] else "corrected"
        else:
            if category:
                raise DenseVLMError(f"a '{verdict}' verdict takes no category")
            status = verdict
        cur = conn.execute(
            "INSERT INTO verdicts (region_id, reviewer, status, class_id, created_at) VALUES (?, ?, ?, ?, ?)",
            (region_id, reviewer, status, class_id, now),
        )
        row = conn.execute("SELECT * FROM verdicts WHERE id = ?", (cur.lastrowid,)).fetchone()
        result = _verdict_dict(conn, row)
    result["new_class"] = new_class
    return result


def add_class(store: ReviewStore, name: str, thing: Optional[bool], reviewer: str, at: Optional[float] = None,
              defect: bool = False) -> dict:
    """Add a class a reviewer typed, or find the one with that name or synonym: ``{"class": {...},
    "new_class": bool}``. ``thing`` is required for a new name; ``defect`` marks the class a defect
    (a thing that makes an inspected item NG; it implies ``thing``). Raises DenseVLMError on bad input."""
    reviewer = clean_reviewer(reviewer)
    if not clean_name(name or ""):
        raise DenseVLMError("a new class needs a name (it was empty)")
    if defect and thing is False:
        raise DenseVLMError(f"'{clean_name(name)}': a defect is a thing, not stuff")
    with store.transaction() as conn:
        class_id, new = _class_for_verdict(store, conn, name, True if defect else thing, reviewer,
                                           time.time() if at is None else float(at))
        if defect:
            if not conn.execute("SELECT thing FROM classes WHERE id = ?", (class_id,)).fetchone()["thing"]:
                raise DenseVLMError(f"'{clean_name(name)}' is stuff in this database; a defect is a thing")
            store.mark_defect(conn, class_id)
            logger.info("reviewer %s marked class '%s' a defect", reviewer, clean_name(name))
    return {"class": next(c for c in store.classes() if c["id"] == class_id), "new_class": new}


def _class_for_verdict(store: ReviewStore, conn: sqlite3.Connection, category: Optional[str], thing: Optional[bool],
                       reviewer: str, now: float) -> tuple[int, bool]:
    name = clean_name(category or "")
    if not name:
        raise DenseVLMError("a 'category' verdict needs a category name")
    row = store.find_class(name)
    if row is not None:
        return row["id"], False
    if len(name) > MAX_NAME_LENGTH:
        raise DenseVLMError(f"category name is longer than {MAX_NAME_LENGTH} characters")
    if any(ch in name for ch in ",#[]") or not name.isprintable():
        raise DenseVLMError(f"category '{name}' contains a character not allowed in class names (, # [ ])")
    if thing is None:
        raise DenseVLMError(f"'{name}' is a new category: say whether it is a thing or stuff")
    cur = conn.execute(
        "INSERT INTO classes (name, synonyms, thing, source, added_by, created_at) VALUES (?, ?, ?, 'reviewer', ?, ?)",
        (name, json.dumps([name], ensure_ascii=False), int(bool(thing)), reviewer, now),
    )
    conn.execute("INSERT INTO class_names (name, class_id) VALUES (?, ?)", (name, cur.lastrowid))
    logger.info("reviewer %s added class '%s' (%s)", reviewer, name, "thing" if thing else "stuff")
    return cur.lastrowid, True


def _verdict_dict(conn: sqlite3.Connection, row: sqlite3.Row) -> dict:
    cls = None
    if row["class_id"] is not None:
        cls = conn.execute("SELECT name, thing FROM classes WHERE id = ?", (row["class_id"],)).fetchone()
    return {
        "verdict_id": row["id"],
        "region_id": row["region_id"],
        "reviewer": row["reviewer"],
        "status": row["status"],
        "category": cls["name"] if cls else None,
        "thing": bool(cls["thing"]) if cls else None,
        "created_at": row["created_at"],
    }


def undo(store: ReviewStore, reviewer: str) -> Optional[dict]:
    """Undo ``reviewer``'s newest verdict that is not undone yet; returns it, or None when there is none.

    The row stays in the history, marked undone; the reviewer's previous verdict on the same
    region (if any) becomes current again.
    """
    reviewer = clean_reviewer(reviewer)
    with store.transaction() as conn:
        row = conn.execute(
            "SELECT * FROM verdicts WHERE reviewer = ? AND undone_at IS NULL ORDER BY id DESC LIMIT 1", (reviewer,)
        ).fetchone()
        if row is None:
            return None
        conn.execute("UPDATE verdicts SET undone_at = ? WHERE id = ?", (time.time(), row["id"]))
        return _verdict_dict(conn, row)


def history(store: ReviewStore, reviewer: str, limit: int = 20) -> list[dict]:
    """``reviewer``'s newest current verdicts, newest first, with the region key."""
    reviewer = clean_reviewer(reviewer)
    with store.snapshot() as conn:
        rows = conn.execute(
            "SELECT v.*, r.key FROM current_verdicts v JOIN regions r ON r.id = v.region_id"
            " WHERE v.reviewer = ? ORDER BY v.id DESC LIMIT ?",
            (reviewer, int(limit)),
        ).fetchall()
        out = []
        for row in rows:
            item = _verdict_dict(conn, row)
            item["key"] = row["key"]
            out.append(item)
    return out
