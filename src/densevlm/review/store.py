"""The review database: proposed regions, their teacher candidates and the experts' verdicts.

One SQLite file (WAL journal, foreign keys on, every write in one ``BEGIN IMMEDIATE``
transaction) holds:

* ``classes``: the vocabulary of the candidates' header plus classes typed by reviewers;
* ``images``: image files (a root directory and a file name relative to it, size in pixels);
* ``regions``: one row per proposed region (box XYXY in original image pixels, optional COCO
  compressed RLE mask, teacher confidence, thing flag) keyed by the stable region id of the
  candidates file;
* ``candidates``: the teacher's top-k categories per region with probabilities;
* ``verdicts``: every verdict ever given, never deleted. A reviewer's *current* verdict on a
  region is their newest verdict on it that was not undone; undo marks a row as undone.

A verdict's status is ``accepted`` when its category is the teacher's top-1, ``corrected`` when
it is another category, ``rejected`` when the region is not a region, ``unsure`` otherwise.
Times are Unix seconds (UTC).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Sequence

from densevlm.errors import DenseVLMError
from densevlm.review.candidates import CandidateRegion, CandidatesFile, CandidatesHeader, clean_name, rle_counts

if TYPE_CHECKING:
    from densevlm.vocab.vocabulary import Vocabulary

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "ImportSummary",
    "ReviewedRegion",
    "ReviewStore",
    "RegionNotFound",
    "import_candidates",
    "load_reviewed_regions",
    "reviewed_vocabulary",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STATUSES = ("accepted", "corrected", "rejected", "unsure")
VERDICTS = ("category", "rejected", "unsure")
MAX_NAME_LENGTH = 80

_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE imports (
    id INTEGER PRIMARY KEY,
    candidates_file TEXT NOT NULL,
    images_dir TEXT NOT NULL,
    teacher TEXT,
    header TEXT NOT NULL,
    regions_added INTEGER NOT NULL,
    imported_at REAL NOT NULL
);
CREATE TABLE classes (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    synonyms TEXT NOT NULL,
    thing INTEGER NOT NULL CHECK (thing IN (0, 1)),
    source TEXT NOT NULL CHECK (source IN ('vocabulary', 'reviewer')),
    added_by TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE class_names (
    name TEXT PRIMARY KEY COLLATE NOCASE,
    class_id INTEGER NOT NULL REFERENCES classes(id)
);
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    root TEXT NOT NULL,
    file_name TEXT NOT NULL,
    width INTEGER NOT NULL CHECK (width > 0),
    height INTEGER NOT NULL CHECK (height > 0),
    UNIQUE (root, file_name)
);
CREATE TABLE regions (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    import_id INTEGER NOT NULL REFERENCES imports(id),
    image_id INTEGER NOT NULL REFERENCES images(id),
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    mask TEXT,
    confidence REAL NOT NULL,
    thing INTEGER NOT NULL CHECK (thing IN (0, 1)),
    kept INTEGER NOT NULL CHECK (kept IN (0, 1))
);
CREATE INDEX regions_confidence ON regions(confidence, id);
CREATE TABLE candidates (
    region_id INTEGER NOT NULL REFERENCES regions(id),
    rank INTEGER NOT NULL CHECK (rank >= 0),
    class_id INTEGER NOT NULL REFERENCES classes(id),
    prob REAL NOT NULL,
    PRIMARY KEY (region_id, rank)
);
CREATE INDEX candidates_class ON candidates(class_id, rank);
CREATE TABLE verdicts (
    id INTEGER PRIMARY KEY,
    region_id INTEGER NOT NULL REFERENCES regions(id),
    reviewer TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('accepted', 'corrected', 'rejected', 'unsure')),
    class_id INTEGER REFERENCES classes(id),
    created_at REAL NOT NULL,
    undone_at REAL,
    CHECK ((status IN ('accepted', 'corrected')) = (class_id IS NOT NULL))
);
CREATE INDEX verdicts_region_reviewer ON verdicts(region_id, reviewer, undone_at);
CREATE INDEX verdicts_reviewer ON verdicts(reviewer, undone_at, id);
CREATE VIEW current_verdicts AS
    SELECT v.* FROM verdicts v
    WHERE v.undone_at IS NULL
      AND v.id = (SELECT MAX(w.id) FROM verdicts w
                  WHERE w.region_id = v.region_id AND w.reviewer = v.reviewer AND w.undone_at IS NULL);
"""


# ----------------------------------------------------------------------------------------------
# The store


class RegionNotFound(LookupError):
    """No region has this database id."""


@dataclass(frozen=True)
class ImportSummary:
    """What one import did: counts of rows added, and regions that were already there."""

    regions_added: int
    regions_present: int
    regions_differing: int
    images_added: int
    classes_added: int
    total_regions: int


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


def _connect(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(db_path), isolation_level=None, timeout=30.0, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class ReviewStore:
    """An open review database. Use as a context manager, or call :meth:`close`.

    ``ReviewStore(path)`` opens an existing database (one-line error when it is missing or not
    a review database); ``ReviewStore(path, create=True)`` creates it when missing.
    A store holds one SQLite connection; open one store per thread.
    """

    def __init__(self, db_path: str | Path, create: bool = False) -> None:
        self.path = Path(db_path)
        if not self.path.exists():
            if not create:
                raise DenseVLMError(f"{self.path}: review database not found; create it with `densevlm review init`")
            if not self.path.parent.is_dir():
                raise DenseVLMError(f"{self.path}: directory {self.path.parent} does not exist")
        elif self.path.is_dir():
            raise DenseVLMError(f"{self.path}: is a directory, not a review database")
        try:
            self.conn = _connect(self.path)
            self._prepare(create)
        except sqlite3.DatabaseError as e:
            raise DenseVLMError(f"{self.path}: not a usable SQLite review database ({e})") from None

    def _prepare(self, create: bool) -> None:
        tables = {r["name"] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "schema_version" not in tables:
            if tables:
                raise DenseVLMError(f"{self.path}: this SQLite file is not a densevlm review database")
            if not create:
                raise DenseVLMError(f"{self.path}: empty database; create it with `densevlm review init`")
            self.conn.execute("PRAGMA journal_mode = WAL")
            with self.transaction() as conn:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            logger.debug("created review database %s", self.path)
            return
        row = self.conn.execute("SELECT version FROM schema_version").fetchone()
        version = row["version"] if row else None
        if version != SCHEMA_VERSION:
            raise DenseVLMError(
                f"{self.path}: review database schema version {version}; this densevlm reads version {SCHEMA_VERSION}"
            )
        self.conn.execute("PRAGMA journal_mode = WAL")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "ReviewStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any exception."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same database state."""
        self.conn.execute("BEGIN")
        try:
            yield self.conn
        finally:
            self.conn.execute("COMMIT")

    # -- import ---------------------------------------------------------------------------------

    def import_candidates(self, candidates_path: str | Path, images_dir: str | Path | None = None) -> ImportSummary:
        """Add the regions of a candidates JSONL file; regions already in the database are left as they are.

        ``images_dir`` overrides the header's ``images``; a relative header path is taken
        relative to the candidates file. Everything is checked before anything is written, and
        the whole import is one transaction.
        """
        return self._import(CandidatesFile.load(candidates_path, images_dir))

    def _import(self, source: "CandidatesFile") -> ImportSummary:
        path, header, regions, root, sizes = source.path, source.header, source.regions, source.root, source.sizes
        now = time.time()
        added = present = differing = images_added = 0
        with self.transaction() as conn:
            class_ids, classes_added = self._add_header_classes(conn, header, path, now)
            cur = conn.execute(
                "INSERT INTO imports (candidates_file, images_dir, teacher, header, regions_added, imported_at)"
                " VALUES (?, ?, ?, ?, 0, ?)",
                (str(path.resolve()), str(root), header.teacher, json.dumps(header.raw, ensure_ascii=False), now),
            )
            import_id = cur.lastrowid
            image_ids: dict[str, int] = {}
            for region in regions:
                existing = conn.execute("SELECT * FROM regions WHERE key = ?", (region.key,)).fetchone()
                if existing is not None:
                    present += 1
                    if not self._same_region(conn, existing, region, class_ids, root):
                        differing += 1
                    continue
                image_id = image_ids.get(region.image)
                if image_id is None:
                    image_id, is_new = self._image_id(conn, root, region, sizes[region.image], path)
                    image_ids[region.image] = image_id
                    images_added += int(is_new)
                cur = conn.execute(
                    "INSERT INTO regions (key, import_id, image_id, x1, y1, x2, y2, mask, confidence, thing, kept)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        region.key,
                        import_id,
                        image_id,
                        *region.box,
                        json.dumps(region.mask) if region.mask else None,
                        region.confidence,
                        int(region.thing),
                        int(region.kept),
                    ),
                )
                region_id = cur.lastrowid
                conn.executemany(
                    "INSERT INTO candidates (region_id, rank, class_id, prob) VALUES (?, ?, ?, ?)",
                    [(region_id, rank, class_ids[index], prob) for rank, (index, prob) in enumerate(region.candidates)],
                )
                added += 1
            if added or classes_added:
                conn.execute("UPDATE imports SET regions_added = ? WHERE id = ?", (added, import_id))
            else:
                conn.execute("DELETE FROM imports WHERE id = ?", (import_id,))
            total = conn.execute("SELECT COUNT(*) FROM regions").fetchone()[0]
        if differing:
            logger.warning(
                "%s: %d regions are already in the database with a different box, mask or candidates; "
                "the database keeps the first import (and its verdicts)",
                path,
                differing,
            )
        return ImportSummary(added, present, differing, images_added, classes_added, total)

    def _add_header_classes(
        self, conn: sqlite3.Connection, header: CandidatesHeader, path: Path, now: float
    ) -> tuple[list[int], int]:
        class_ids: list[int] = []
        added = 0
        for cls in header.classes:
            row = conn.execute(
                "SELECT c.id, c.name, c.thing FROM class_names n JOIN classes c ON c.id = n.class_id WHERE n.name = ?",
                (cls.synonyms[0],),
            ).fetchone()
            if row is not None:
                if bool(row["thing"]) != cls.thing:
                    have = "a thing" if row["thing"] else "stuff"
                    want = "a thing" if cls.thing else "stuff"
                    raise DenseVLMError(
                        f"{path}: header class '{cls.synonyms[0]}' is {want}, but the database has '{row['name']}' as {have}"
                    )
                class_ids.append(row["id"])
                continue
            for name in cls.synonyms[1:]:
                clash = conn.execute(
                    "SELECT c.name FROM class_names n JOIN classes c ON c.id = n.class_id WHERE n.name = ?", (name,)
                ).fetchone()
                if clash is not None:
                    raise DenseVLMError(
                        f"{path}: header synonym '{name}' of class '{cls.synonyms[0]}' is already a name of class '{clash['name']}' in the database"
                    )
            cur = conn.execute(
                "INSERT INTO classes (name, synonyms, thing, source, added_by, created_at) VALUES (?, ?, ?, 'vocabulary', NULL, ?)",
                (cls.synonyms[0], json.dumps(list(cls.synonyms), ensure_ascii=False), int(cls.thing), now),
            )
            conn.executemany(
                "INSERT INTO class_names (name, class_id) VALUES (?, ?)", [(n, cur.lastrowid) for n in cls.synonyms]
            )
            class_ids.append(cur.lastrowid)
            added += 1
        return class_ids, added

    def _image_id(
        self, conn: sqlite3.Connection, root: Path, region: CandidateRegion, size: tuple[int, int], path: Path
    ) -> tuple[int, bool]:
        row = conn.execute(
            "SELECT id, width, height FROM images WHERE root = ? AND file_name = ?", (str(root), region.image)
        ).fetchone()
        if row is not None:
            if (row["width"], row["height"]) != (region.width, region.height):
                raise DenseVLMError(
                    f"{path}:{region.line}: image '{region.image}' is {region.width}x{region.height} here but "
                    f"{row['width']}x{row['height']} in the database"
                )
            return row["id"], False
        cur = conn.execute(
            "INSERT INTO images (root, file_name, width, height) VALUES (?, ?, ?, ?)",
            (str(root), region.image, size[0], size[1]),
        )
        return cur.lastrowid, True

    @staticmethod
    def _same_region(
        conn: sqlite3.Connection, row: sqlite3.Row, region: CandidateRegion, class_ids: list[int], root: Path
    ) -> bool:
        image = conn.execute("SELECT root, file_name FROM images WHERE id = ?", (row["image_id"],)).fetchone()
        cands = [
            (r["class_id"], r["prob"])
            for r in conn.execute("SELECT class_id, prob FROM candidates WHERE region_id = ? ORDER BY rank", (row["id"],))
        ]
        mask = json.loads(row["mask"]) if row["mask"] else None
        return (
            image["root"] == str(root)
            and image["file_name"] == region.image
            and (row["x1"], row["y1"], row["x2"], row["y2"]) == region.box
            and mask == region.mask
            and cands == [(class_ids[i], p) for i, p in region.candidates]
        )

    # -- classes --------------------------------------------------------------------------------

    def classes(self) -> list[dict]:
        """Every class: id, name, synonyms, thing, source ('vocabulary' or 'reviewer'), in id order."""
        rows = self.conn.execute("SELECT * FROM classes ORDER BY id").fetchall()
        return [
            {
                "id": r["id"],
                "name": r["name"],
                "synonyms": json.loads(r["synonyms"]),
                "thing": bool(r["thing"]),
                "source": r["source"],
            }
            for r in rows
        ]

    def find_class(self, name: str) -> Optional[sqlite3.Row]:
        """The class having ``name`` as its name or a synonym (case-insensitive), or None."""
        return self.conn.execute(
            "SELECT c.* FROM class_names n JOIN classes c ON c.id = n.class_id WHERE n.name = ?", (clean_name(name),)
        ).fetchone()

    # -- regions --------------------------------------------------------------------------------

    def region_count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM regions").fetchone()[0]

    def next_region(
        self,
        reviewer: str,
        category: Optional[str] = None,
        max_conf: Optional[float] = None,
        min_conf: Optional[float] = None,
        order: str = "asc",
        exclude: Iterable[int] = (),
    ) -> Optional[dict]:
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
            cls = self.find_class(category)
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
        row = self.conn.execute(
            "SELECT r.id FROM regions r WHERE " + " AND ".join(where)
            + " ORDER BY EXISTS (SELECT 1 FROM verdicts v WHERE v.region_id = r.id AND v.undone_at IS NULL),"
            f" r.confidence {direction}, r.id LIMIT 1",
            params,
        ).fetchone()
        return None if row is None else self.region(row["id"], reviewer)

    def region(self, region_id: int, reviewer: Optional[str] = None) -> Optional[dict]:
        """A region as the page shows it (box XYXY pixels, mask runs, candidates), or None.

        ``mask_runs`` are the mask's uncompressed column-major run lengths (background first).
        ``my_verdict`` is ``reviewer``'s current verdict; ``verdicts`` counts everyone's.
        """
        with self.snapshot() as conn:
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
                mine = self._verdict_dict(conn, mine) if mine is not None else None
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

    def image_file(self, image_id: int) -> Optional[Path]:
        """The file of an imported image (by database id), or None when unknown or missing.

        The path is the imported root joined with the file name checked at import (relative,
        no '..'); symlinks inside the images directory are followed.
        """
        row = self.conn.execute("SELECT root, file_name FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            return None
        root = Path(row["root"])
        path = Path(os.path.normpath(root / row["file_name"]))
        if root not in path.parents or not path.is_file():
            return None
        return path

    def add_class(self, name: str, thing: Optional[bool], reviewer: str, at: Optional[float] = None) -> dict:
        """Add a class a reviewer typed (or find the one with that name or synonym): ``{"class": {...},
        "new_class": bool}``. ``thing`` is required for a new name. Raises DenseVLMError on bad input."""
        reviewer = clean_reviewer(reviewer)
        with self.transaction() as conn:
            class_id, new = self._class_for_verdict(conn, name, thing, reviewer, time.time() if at is None else float(at))
        return {"class": next(c for c in self.classes() if c["id"] == class_id), "new_class": new}

    # -- verdicts -------------------------------------------------------------------------------

    def add_verdict(
        self,
        region_id: int,
        reviewer: str,
        verdict: str,
        category: Optional[str] = None,
        thing: Optional[bool] = None,
        at: Optional[float] = None,
    ) -> dict:
        """Record ``reviewer``'s verdict on a region; returns it once the transaction has committed.

        ``verdict`` is 'category' (then ``category`` names a class or synonym; an unknown name
        becomes a new class and needs ``thing``), 'rejected' (not a region) or 'unsure'.
        ``at`` is Unix seconds (default: now). Raises DenseVLMError on bad input.
        """
        reviewer = clean_reviewer(reviewer)
        if verdict not in VERDICTS:
            raise DenseVLMError(f"verdict must be one of {', '.join(VERDICTS)}, got '{verdict}'")
        now = time.time() if at is None else float(at)
        with self.transaction() as conn:
            top1 = conn.execute(
                "SELECT class_id FROM candidates WHERE region_id = ? AND rank = 0", (region_id,)
            ).fetchone()
            if top1 is None:
                raise RegionNotFound(region_id)
            class_id = None
            new_class = False
            if verdict == "category":
                class_id, new_class = self._class_for_verdict(conn, category, thing, reviewer, now)
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
            result = self._verdict_dict(conn, row)
        result["new_class"] = new_class
        return result

    def _class_for_verdict(
        self, conn: sqlite3.Connection, category: Optional[str], thing: Optional[bool], reviewer: str, now: float
    ) -> tuple[int, bool]:
        name = clean_name(category or "")
        if not name:
            raise DenseVLMError("a 'category' verdict needs a category name")
        row = self.find_class(name)
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

    @staticmethod
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

    def undo(self, reviewer: str) -> Optional[dict]:
        """Undo ``reviewer``'s newest verdict that is not undone yet; returns it, or None when there is none.

        The row stays in the history, marked undone; the reviewer's previous verdict on the same
        region (if any) becomes current again.
        """
        reviewer = clean_reviewer(reviewer)
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT * FROM verdicts WHERE reviewer = ? AND undone_at IS NULL ORDER BY id DESC LIMIT 1", (reviewer,)
            ).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE verdicts SET undone_at = ? WHERE id = ?", (time.time(), row["id"]))
            return self._verdict_dict(conn, row)

    def history(self, reviewer: str, limit: int = 20) -> list[dict]:
        """``reviewer``'s newest current verdicts, newest first, with the region key."""
        reviewer = clean_reviewer(reviewer)
        with self.snapshot() as conn:
            rows = conn.execute(
                "SELECT v.*, r.key FROM current_verdicts v JOIN regions r ON r.id = v.region_id"
                " WHERE v.reviewer = ? ORDER BY v.id DESC LIMIT ?",
                (reviewer, int(limit)),
            ).fetchall()
            out = []
            for row in rows:
                item = self._verdict_dict(conn, row)
                item["key"] = row["key"]
                out.append(item)
        return out

    def progress(self, reviewer: Optional[str] = None) -> dict:
        """Counts: regions in total, reviewed by anyone, reviewed by ``reviewer``; per teacher top-1 category."""
        reviewer = clean_reviewer(reviewer) if reviewer else None
        with self.snapshot() as conn:
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

    def conflicts(self) -> list[dict]:
        """Regions where reviewers' current verdicts disagree (different status or category)."""
        with self.snapshot() as conn:
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
        conflicts: dict[int, dict] = {}
        for row in rows:
            item = conflicts.setdefault(row["region_id"], {"region_id": row["region_id"], "key": row["key"], "verdicts": []})
            item["verdicts"].append(
                {"reviewer": row["reviewer"], "status": row["status"], "category": row["category"], "created_at": row["created_at"]}
            )
        return list(conflicts.values())

    # -- resolved verdicts ----------------------------------------------------------------------

    def resolved_regions(self, include_unreviewed: bool = False) -> list[dict]:
        """Every region with the verdict resolved over reviewers, in region order.

        Each vote is a reviewer's current verdict ('category name' or 'rejected'/'unsure'); the
        outcome with most votes wins, ties go to the outcome of the most recent verdict. Keys:
        ``id`` (db), ``key``, ``image_id``, ``image``, ``image_path``, ``width``, ``height``, ``box`` XYXY pixels,
        ``mask``, ``confidence``, ``kept``, ``teacher`` (name), ``teacher_top1``, ``teacher_thing``, ``status`` (one of
        STATUSES, or 'unreviewed'), ``category``, ``thing``, ``reviewer``, ``reviewers``,
        ``votes`` (reviewer -> outcome), ``reviewed_at``.
        """
        with self.snapshot() as conn:
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


def _outcome(row: sqlite3.Row) -> tuple[str, int]:
    """What a verdict says: ('class', class id) or (status, 0), so that a class named 'unsure' stays a class."""
    if row["class_id"] is not None:
        return ("class", row["class_id"])
    return (row["status"], 0)


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


def clean_reviewer(name: Optional[str]) -> str:
    """A reviewer name with whitespace collapsed; DenseVLMError when empty or longer than 64 characters."""
    cleaned = " ".join((name or "").split())
    if not cleaned:
        raise DenseVLMError("reviewer name is empty")
    if len(cleaned) > 64 or not cleaned.isprintable():
        raise DenseVLMError("reviewer name must be at most 64 printable characters")
    return cleaned


# ----------------------------------------------------------------------------------------------
# Module-level API


def import_candidates(
    db_path: str | Path, candidates_path: str | Path, images_dir: str | Path | None = None
) -> ImportSummary:
    """Import a candidates JSONL file (idempotent); the database is created, if missing, only once the file checks out."""
    source = CandidatesFile.load(candidates_path, images_dir)
    with ReviewStore(db_path, create=True) as store:
        return store._import(source)


def load_reviewed_regions(db_path: str | Path) -> list[ReviewedRegion]:
    """Every region with at least one current verdict, resolved by majority (ties: most recent).

    Boxes are XYXY in original image pixels; ``image_path`` is absolute.
    """
    with ReviewStore(db_path) as store:
        resolved = store.resolved_regions()
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


def reviewed_vocabulary(db_path: str | Path) -> "Vocabulary":
    """The header vocabulary plus classes reviewers added, each in its section (things, then stuff)."""
    from densevlm.vocab.vocabulary import Vocabulary

    with ReviewStore(db_path) as store:
        classes = store.classes()
    things = [c["synonyms"] for c in classes if c["thing"]]
    stuff = [c["synonyms"] for c in classes if not c["thing"]]
    return Vocabulary.from_lists(things, stuff)
