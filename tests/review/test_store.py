"""The review database file: WAL journal, schema version, foreign keys, one-line errors on foreign files."""

from __future__ import annotations

import sqlite3

import pytest

from densevlm.errors import DenseVLMError
from densevlm.review.store import ReviewStore


def test_database_settings(imported):
    conn = sqlite3.connect(imported.db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    conn.close()
    with ReviewStore(imported.db) as store:
        assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        with pytest.raises(sqlite3.IntegrityError):
            with store.transaction() as conn:
                conn.execute(
                    "INSERT INTO verdicts (region_id, reviewer, status, class_id, created_at) VALUES (999, 'x', 'rejected', NULL, 0)"
                )


def test_missing_and_foreign_databases(tmp_path):
    with pytest.raises(DenseVLMError, match="review database not found"):
        ReviewStore(tmp_path / "none.sqlite")
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(DenseVLMError, match="not a densevlm review database"):
        ReviewStore(other)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(DenseVLMError, match="not a usable SQLite"):
        ReviewStore(junk)
