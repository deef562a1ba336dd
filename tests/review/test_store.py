"""The review database: idempotent imports, verdict history, undo, majority resolution, vocabulary."""

from __future__ import annotations

import sqlite3

import pytest

from densevlm.errors import DenseVLMError
from densevlm.review.store import ReviewStore, import_candidates, load_reviewed_regions, reviewed_vocabulary

from .conftest import header, region, write_candidates

TABLES = ("classes", "class_names", "images", "regions", "candidates", "verdicts", "imports")


def row_counts(db) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        conn.close()


def region_id(store: ReviewStore, key: str) -> int:
    return store.conn.execute("SELECT id FROM regions WHERE key = ?", (key,)).fetchone()[0]


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


def test_import_stores_regions_candidates_and_vocabulary(imported):
    with ReviewStore(imported.db) as store:
        names = [(c["name"], c["synonyms"], c["thing"], c["source"]) for c in store.classes()]
        assert names == [
            ("bolt", ["bolt"], True, "vocabulary"),
            ("scratch", ["scratch", "scuff"], True, "vocabulary"),
            ("nut", ["nut"], True, "vocabulary"),
            ("conveyor belt", ["conveyor belt"], False, "vocabulary"),
            ("steel plate", ["steel plate"], False, "vocabulary"),
        ]
        shown = store.region(region_id(store, "a.png#1"))
    assert shown["box"] == [20.0, 10.0, 44.0, 30.0]
    assert shown["confidence"] == pytest.approx(0.35)
    assert [c["category"] for c in shown["candidates"]] == ["scratch", "bolt", "steel plate"]
    assert [c["prob"] for c in shown["candidates"]] == pytest.approx([0.35, 0.30, 0.2])
    assert shown["candidates"][2]["thing"] is False
    assert shown["mask"]["size"] == [64, 64]
    assert sum(shown["mask_runs"][1::2]) == int(imported.masks["a.png#1"].sum())
    assert row_counts(imported.db)["regions"] == 8


def test_reimport_is_idempotent_and_keeps_verdicts(imported):
    before = row_counts(imported.db)
    with ReviewStore(imported.db) as store:
        rid = region_id(store, "a.png#0")
        store.add_verdict(rid, "ann", "category", "nut")
    summary = import_candidates(imported.db, imported.candidates)
    assert summary.regions_added == 0 and summary.regions_present == 8 and summary.classes_added == 0
    after = row_counts(imported.db)
    assert after == {**before, "verdicts": 1}

    more = imported.regions + [
        region("a.png#3", "a.png", (64, 64), [1.0, 1.0, 5.0, 5.0], [("nut", 0.5)]),
        region("c.png#3", "c.png", (48, 32), [0.0, 0.0, 48.0, 32.0], [("steel plate", 0.7)]),
    ]
    newer = write_candidates(imported.root / "more.jsonl", header(imported.images), more)
    summary = import_candidates(imported.db, newer)
    assert (summary.regions_added, summary.regions_present, summary.total_regions) == (2, 8, 10)
    counts = row_counts(imported.db)
    assert counts["regions"] == 10 and counts["images"] == 3 and counts["candidates"] == before["candidates"] + 2
    with ReviewStore(imported.db) as store:
        mine = store.history("ann")
    assert [(v["key"], v["status"], v["category"]) for v in mine] == [("a.png#0", "corrected", "nut")]


def test_reimport_with_a_changed_region_keeps_the_first(imported, caplog):
    changed = [dict(r) for r in imported.regions]
    changed[0] = {**changed[0], "box": [5.0, 5.0, 21.0, 21.0]}
    path = write_candidates(imported.root / "changed.jsonl", header(imported.images), changed)
    summary = import_candidates(imported.db, path)
    assert summary.regions_added == 0 and summary.regions_differing == 1
    with ReviewStore(imported.db) as store:
        assert store.region(region_id(store, "a.png#0"))["box"] == [4.0, 4.0, 20.0, 20.0]
    assert "keeps the first import" in caplog.text


def test_failed_import_writes_nothing(imported):
    before = row_counts(imported.db)
    bad = imported.regions + [region("a.png#9", "missing.png", (64, 64), [1.0, 1.0, 5.0, 5.0], [("nut", 0.5)])]
    path = write_candidates(imported.root / "bad.jsonl", header(imported.images), [bad[0]] + bad[-1:])
    with pytest.raises(DenseVLMError, match="missing.png' not found"):
        import_candidates(imported.db, path)
    assert row_counts(imported.db) == before


def test_images_flag_wins_over_header(dataset, tmp_path):
    path = write_candidates(tmp_path / "elsewhere.jsonl", header(tmp_path / "no-such-dir"), dataset.regions)
    with pytest.raises(DenseVLMError, match="no-such-dir"):
        import_candidates(dataset.db, path)
    summary = import_candidates(dataset.db, path, images_dir=dataset.images)
    assert summary.regions_added == 8
    regions = {r.region_id: r for r in load_reviewed_regions(dataset.db)}
    assert regions == {}
    with ReviewStore(dataset.db) as store:
        assert store.image_file(1).parent == dataset.images.resolve()


def test_verdict_status_and_new_classes(imported):
    with ReviewStore(imported.db) as store:
        top1_bolt = region_id(store, "a.png#0")
        assert store.add_verdict(top1_bolt, "ann", "category", "BOLT")["status"] == "accepted"
        scratch = region_id(store, "a.png#1")
        # a synonym of the top-1 class is the same class
        assert store.add_verdict(scratch, "ann", "category", "scuff")["status"] == "accepted"
        with pytest.raises(DenseVLMError, match="thing or stuff"):
            store.add_verdict(scratch, "bob", "category", "washer")
        saved = store.add_verdict(scratch, "bob", "category", "  washer ", thing=True)
        assert (saved["status"], saved["category"], saved["thing"], saved["new_class"]) == ("corrected", "washer", True, True)
        again = store.add_verdict(top1_bolt, "cy", "category", "Washer")
        assert again["new_class"] is False and again["category"] == "washer"
        with pytest.raises(DenseVLMError, match="not allowed"):
            store.add_verdict(scratch, "bob", "category", "oil, grease", thing=False)
        with pytest.raises(DenseVLMError, match="reviewer name is empty"):
            store.add_verdict(scratch, "  ", "rejected")
        classes = {c["name"]: c for c in store.classes()}
    assert classes["washer"]["source"] == "reviewer" and classes["washer"]["thing"] is True
    vocab = reviewed_vocabulary(imported.db)
    assert vocab.names == ("bolt", "scratch", "nut", "washer", "conveyor belt", "steel plate")
    assert vocab.is_thing[vocab.index("washer")] is True
    assert vocab.index("scuff") == vocab.index("scratch")


def test_undo_reverts_only_this_reviewers_last_verdict(imported):
    with ReviewStore(imported.db) as store:
        a, b = region_id(store, "a.png#0"), region_id(store, "c.png#0")
        store.add_verdict(a, "ann", "category", "bolt")
        store.add_verdict(a, "ann", "rejected")  # change of mind on the same region
        store.add_verdict(b, "bob", "unsure")
        undone = store.undo("ann")
        assert (undone["region_id"], undone["status"]) == (a, "rejected")
        assert store.region(a, "ann")["my_verdict"]["status"] == "accepted"
        assert store.region(b, "bob")["my_verdict"]["status"] == "unsure"
        store.undo("ann")
        assert store.region(a, "ann")["my_verdict"] is None
        assert store.undo("ann") is None
        rows = store.conn.execute("SELECT reviewer, undone_at IS NOT NULL FROM verdicts ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [("ann", 1), ("ann", 1), ("bob", 0)]


def test_next_region_order_filters_and_progress(imported):
    with ReviewStore(imported.db) as store:
        first = store.next_region("ann")
        assert first["key"] == "c.png#0"  # lowest confidence first
        assert store.next_region("ann", order="desc")["key"] == "a.png#2"
        assert store.next_region("ann", category="nut")["key"] == "sub/b.png#0"
        assert store.next_region("ann", min_conf=0.5, max_conf=0.6)["key"] == "sub/b.png#1"
        assert store.next_region("ann", exclude=[first["id"]])["key"] == "sub/b.png#0"
        store.add_verdict(first["id"], "bob", "rejected")
        # regions nobody judged come before regions someone else judged
        assert store.next_region("ann")["key"] == "sub/b.png#0"
        store.add_verdict(first["id"], "ann", "category", "bolt")
        progress = store.progress("ann")
    assert (progress["total"], progress["reviewed"], progress["mine"]) == (8, 1, 1)
    bolt = next(c for c in progress["by_category"] if c["category"] == "bolt")
    assert (bolt["total"], bolt["reviewed"], bolt["mine"]) == (2, 1, 1)
    assert progress["verdicts_by_status"] == {"accepted": 1, "corrected": 0, "rejected": 1, "unsure": 0}


def test_conflicts_and_majority(imported):
    with ReviewStore(imported.db) as store:
        a, b, c = (region_id(store, k) for k in ("a.png#0", "a.png#1", "c.png#0"))
        store.add_verdict(a, "ann", "category", "bolt", at=100.0)
        store.add_verdict(a, "bob", "category", "nut", at=101.0)
        store.add_verdict(a, "cy", "category", "bolt", at=102.0)
        store.add_verdict(b, "ann", "rejected", at=103.0)
        store.add_verdict(b, "bob", "category", "bolt", at=104.0)  # tie: the most recent wins
        store.add_verdict(c, "ann", "unsure", at=105.0)
        store.add_verdict(c, "bob", "unsure", at=106.0)
        conflicts = {item["key"]: item for item in store.conflicts()}
    assert set(conflicts) == {"a.png#0", "a.png#1"}
    assert {v["reviewer"]: v["category"] for v in conflicts["a.png#0"]["verdicts"]} == {"ann": "bolt", "bob": "nut", "cy": "bolt"}
    resolved = {r.region_id: r for r in load_reviewed_regions(imported.db)}
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


def test_image_file_stays_inside_its_root(imported):
    outside = imported.root / "candidates.jsonl"
    with ReviewStore(imported.db) as store:
        assert store.image_file(1) == imported.images.resolve() / "a.png"
        with store.transaction() as conn:
            root = conn.execute("SELECT root FROM images WHERE id = 1").fetchone()[0]
            conn.execute("INSERT INTO images (id, root, file_name, width, height) VALUES (50, ?, '../candidates.jsonl', 1, 1)", (root,))
            conn.execute("INSERT INTO images (id, root, file_name, width, height) VALUES (51, ?, ?, 1, 1)", (root, str(outside)))
        assert outside.is_file()
        assert store.image_file(50) is None and store.image_file(51) is None and store.image_file(52) is None
