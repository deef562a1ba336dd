"""Kind: a review database another process is writing to.

`review init` used to wait 30 s and die with a sqlite3.OperationalError traceback. A second
connection holds the write lock for the whole test and the busy timeout is 0 s, so the outcome
does not depend on timing.
"""

from __future__ import annotations

import sqlite3

import pytest

from densevlm.cli.main import main
from densevlm.errors import DenseVLMError
from densevlm.review.importing import import_candidates
from densevlm.review.store import BUSY_TIMEOUT_ENV, DatabaseBusy, ReviewStore, busy_timeout
from tests.review.conftest import header, make_dataset, region, write_candidates


@pytest.fixture
def locked(tmp_path, monkeypatch):
    """An imported database, new candidates for it, and another connection holding its write lock."""
    data = make_dataset(tmp_path)
    import_candidates(data.db, data.candidates, None)
    more = write_candidates(tmp_path / "more.jsonl", header(data.images),
                            [region("a.png#9", "a.png", (64, 64), [1.0, 1.0, 9.0, 9.0], [("bolt", 0.9)])])
    monkeypatch.setenv(BUSY_TIMEOUT_ENV, "0")
    other = sqlite3.connect(data.db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    yield data, more
    other.execute("ROLLBACK")
    other.close()


def _regions(db) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM regions").fetchone()[0]
    finally:
        conn.close()


def test_review_init_on_a_locked_database_is_one_line(locked, capsys):
    data, more = locked
    before = more.read_bytes()
    assert main(["review", "init", "--candidates", str(more), "--db", str(data.db)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"{data.db}: another process holds the database" in lines[0] and BUSY_TIMEOUT_ENV in lines[0]
    assert more.read_bytes() == before


def test_the_lock_leaves_the_database_as_it_was_and_a_retry_works(locked):
    data, more = locked
    regions = _regions(data.db)
    with pytest.raises(DatabaseBusy) as info:
        import_candidates(data.db, more, None)
    assert isinstance(info.value, DenseVLMError) and isinstance(info.value, sqlite3.OperationalError)
    assert _regions(data.db) == regions


def test_a_free_database_imports_after_the_other_writer_is_done(tmp_path, monkeypatch):
    data = make_dataset(tmp_path)
    monkeypatch.setenv(BUSY_TIMEOUT_ENV, "0")
    import_candidates(data.db, data.candidates, None)
    other = sqlite3.connect(data.db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("COMMIT")  # done: the lock is free again
    other.close()
    more = write_candidates(tmp_path / "more.jsonl", header(data.images),
                            [region("a.png#9", "a.png", (64, 64), [1.0, 1.0, 9.0, 9.0], [("bolt", 0.9)])])
    assert import_candidates(data.db, more, None).regions_added == 1


@pytest.mark.parametrize("value, expected", [("", 5.0), ("0", 0.0), ("2.5", 2.5)])
def test_busy_timeout_comes_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv(BUSY_TIMEOUT_ENV, value)
    assert busy_timeout() == expected


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_a_bad_busy_timeout_is_one_line(tmp_path, monkeypatch, value):
    monkeypatch.setenv(BUSY_TIMEOUT_ENV, value)
    with pytest.raises(DenseVLMError, match=f"{BUSY_TIMEOUT_ENV}={value}: give a number of seconds"):
        ReviewStore(tmp_path / "r.sqlite", create=True)
    assert not (tmp_path / "r.sqlite").exists()
