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
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from densevlm.errors import DenseVLMError
from densevlm.review.candidates import clean_name

__all__ = ["SCHEMA_VERSION", "STATUSES", "BUSY_TIMEOUT_ENV", "DatabaseBusy", "busy_timeout", "ReviewStore"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STATUSES = ("accepted", "corrected", "rejected", "unsure")

# a later addition: created on first use in databases made before it (no schema version change)
_CLASS_DEFECTS = "CREATE TABLE IF NOT EXISTS class_defects (class_id INTEGER PRIMARY KEY REFERENCES classes(id))"
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
CREATE TABLE class_names (name TEXT PRIMARY KEY COLLATE NOCASE, class_id INTEGER NOT NULL REFERENCES classes(id));
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
""" + _CLASS_DEFECTS + ";\n"


BUSY_TIMEOUT_ENV = "DENSEVLM_REVIEW_BUSY_TIMEOUT"
_DEFAULT_BUSY_TIMEOUT = 5.0


class DatabaseBusy(sqlite3.OperationalError, DenseVLMError):
    """Another process held the database for longer than the busy timeout.

    A :class:`~densevlm.errors.DenseVLMError` (the command line prints one line) and still a
    ``sqlite3.OperationalError`` (the review page answers 503, try again).
    """


def busy_timeout() -> float:
    """Seconds to wait for a database another process is writing: ``$DENSEVLM_REVIEW_BUSY_TIMEOUT``,
    else 5.

    Raises:
        DenseVLMError: the variable is not a number of seconds >= 0.
    """
    text = os.environ.get(BUSY_TIMEOUT_ENV, "").strip()
    if not text:
        return _DEFAULT_BUSY_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0.0 or value == float("inf"):
        raise DenseVLMError(f"${BUSY_TIMEOUT_ENV}={text}: give a number of seconds, 0 or more")
    return value


def _is_busy(e: sqlite3.OperationalError) -> bool:
    text = str(e).lower()
    return "locked" in text or "busy" in text


def _busy(path: Path, timeout: float) -> DatabaseBusy:
    return DatabaseBusy(f"{path}: another process holds the database (still locked after {timeout:g} s); "
                        f"try again when it is done, or wait longer with ${BUSY_TIMEOUT_ENV}=SECONDS")


def _connect(db_path: Path, timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(str(db_path), isolation_level=None, timeout=timeout, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class ReviewStore:
    """An open review database. Use as a context manager, or call :meth:`close`.

    ``ReviewStore(path)`` opens an existing database (one-line error when it is missing or not
    a review database); ``ReviewStore(path, create=True)`` creates it when missing.
    A store holds one SQLite connection; open one store per thread. While another process
    writes, a write waits up to ``timeout`` seconds (default :func:`busy_timeout`), then raises
    :class:`DatabaseBusy`.
    """

    def __init__(self, db_path: str | Path, create: bool = False, timeout: Optional[float] = None) -> None:
        self.path = Path(db_path)
        self.timeout = busy_timeout() if timeout is None else float(timeout)
        if not self.path.exists():
            if not create:
                raise DenseVLMError(f"{self.path}: review database not found; create it with `densevlm review init`")
            if not self.path.parent.is_dir():
                raise DenseVLMError(f"{self.path}: directory {self.path.parent} does not exist")
        elif self.path.is_dir():
            raise DenseVLMError(f"{self.path}: is a directory, not a review database")
        try:
            self.conn = _connect(self.path, self.timeout)
            self._prepare(create)
        except DatabaseBusy:
            raise
        except sqlite3.OperationalError as e:
            if _is_busy(e):
                raise _busy(self.path, self.timeout) from None
            raise DenseVLMError(f"{self.path}: not a usable SQLite review database ({e})") from None
        except sqlite3.DatabaseError as e:
            raise DenseVLMError(f"{self.path}: not a usable SQLite review database ({e})") from None

    def _prepare(self, create: bool) -> None:
        tables = self._table_names()
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

    def _table_names(self) -> set[str]:
        return {r["name"] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "ReviewStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any exception.

        Raises:
            DatabaseBusy: another process held the write lock longer than the busy timeout.
        """
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            if _is_busy(e):
                raise _busy(self.path, self.timeout) from None
            raise
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.OperationalError as e:
            if not _is_busy(e):
                raise
            self.conn.execute("ROLLBACK")
            raise _busy(self.path, self.timeout) from None

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same database state."""
        self.conn.execute("BEGIN")
        try:
            yield self.conn
        finally:
            self.conn.execute("COMMIT")

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

    def defect_names(self) -> list[str]:
        """Display names of the defect classes (what makes an inspected item NG), in class order: those
        an import's header lists under ``[defects]`` (names no class has are skipped) and those a
        reviewer added as a defect (:meth:`mark_defect`)."""
        ids = set()
        for (header,) in self.conn.execute("SELECT header FROM imports"):
            for name in (json.loads(header).get("vocabulary") or {}).get("defects") or []:
                row = self.find_class(name)
                if row is not None:
                    ids.add(row["id"])
        if "class_defects" in self._table_names():  # databases made before it existed have none
            ids.update(class_id for (class_id,) in self.conn.execute("SELECT class_id FROM class_defects"))
        return [c["name"] for c in self.classes() if c["id"] in ids]

    @staticmethod
    def mark_defect(conn: sqlite3.Connection, class_id: int) -> None:
        """Record (inside a write transaction) that a thing class is a defect; the table is created in
        a database made before it existed (no schema version change: older readers ignore it)."""
        conn.execute(_CLASS_DEFECTS)
        conn.execute("INSERT OR IGNORE INTO class_defects (class_id) VALUES (?)", (class_id,))

    def find_class(self, name: str) -> Optional[sqlite3.Row]:
        """The class having ``name`` as its name or a synonym (case-insensitive), or None."""
        return self.conn.execute(
            "SELECT c.* FROM class_names n JOIN classes c ON c.id = n.class_id WHERE n.name = ?", (clean_name(name),)
        ).fetchone()
