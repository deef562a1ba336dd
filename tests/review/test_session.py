"""The review session: verdict status and new classes, undo, next-region order and filters, image files."""

from __future__ import annotations

import pytest

from densevlm.errors import DenseVLMError
from densevlm.review import session
from densevlm.review.reviewed import load_reviewed
from densevlm.review.store import ReviewStore

from .conftest import region_id


def test_verdict_status_and_new_classes(imported):
    with ReviewStore(imported.db) as store:
        top1_bolt = region_id(store, "a.png#0")
        assert session.add_verdict(store, top1_bolt, "ann", "category", "BOLT")["status"] == "accepted"
        scratch = region_id(store, "a.png#1")
        # a synonym of the top-1 class is the same class
        assert session.add_verdict(store, scratch, "ann", "category", "scuff")["status"] == "accepted"
        with pytest.raises(DenseVLMError, match="thing or stuff"):
            session.add_verdict(store, scratch, "bob", "category", "washer")
        saved = session.add_verdict(store, scratch, "bob", "category", "  washer ", thing=True)
        assert (saved["status"], saved["category"], saved["thing"], saved["new_class"]) == ("corrected", "washer", True, True)
        again = session.add_verdict(store, top1_bolt, "cy", "category", "Washer")
        assert again["new_class"] is False and again["category"] == "washer"
        with pytest.raises(DenseVLMError, match="not allowed"):
            session.add_verdict(store, scratch, "bob", "category", "oil, grease", thing=False)
        with pytest.raises(DenseVLMError, match="reviewer name is empty"):
            session.add_verdict(store, scratch, "  ", "rejected")
        classes = {c["name"]: c for c in store.classes()}
    assert classes["washer"]["source"] == "reviewer" and classes["washer"]["thing"] is True
    vocab = load_reviewed(imported.db).vocab
    assert vocab.names == ("bolt", "scratch", "nut", "washer", "conveyor belt", "steel plate")
    assert vocab.is_thing[vocab.index("washer")] is True
    assert vocab.index("scuff") == vocab.index("scratch")


def test_undo_reverts_only_this_reviewers_last_verdict(imported):
    with ReviewStore(imported.db) as store:
        a, b = region_id(store, "a.png#0"), region_id(store, "c.png#0")
        session.add_verdict(store, a, "ann", "category", "bolt")
        session.add_verdict(store, a, "ann", "rejected")  # change of mind on the same region
        session.add_verdict(store, b, "bob", "unsure")
        undone = session.undo(store, "ann")
        assert (undone["region_id"], undone["status"]) == (a, "rejected")
        assert session.region(store, a, "ann")["my_verdict"]["status"] == "accepted"
        assert session.region(store, b, "bob")["my_verdict"]["status"] == "unsure"
        session.undo(store, "ann")
        assert session.region(store, a, "ann")["my_verdict"] is None
        assert session.undo(store, "ann") is None
        rows = store.conn.execute("SELECT reviewer, undone_at IS NOT NULL FROM verdicts ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [("ann", 1), ("ann", 1), ("bob", 0)]


def test_next_region_order_and_filters(imported):
    with ReviewStore(imported.db) as store:
        first = session.next_region(store, "ann")
        assert first["key"] == "c.png#0"  # lowest confidence first
        assert session.next_region(store, "ann", order="desc")["key"] == "a.png#2"
        assert session.next_region(store, "ann", category="nut")["key"] == "sub/b.png#0"
        assert session.next_region(store, "ann", min_conf=0.5, max_conf=0.6)["key"] == "sub/b.png#1"
        assert session.next_region(store, "ann", exclude=[first["id"]])["key"] == "sub/b.png#0"
        session.add_verdict(store, first["id"], "bob", "rejected")
        # regions nobody judged come before regions someone else judged
        assert session.next_region(store, "ann")["key"] == "sub/b.png#0"


def test_image_file_stays_inside_its_root(imported):
    outside = imported.root / "candidates.jsonl"
    with ReviewStore(imported.db) as store:
        assert session.image_file(store, 1) == imported.images.resolve() / "a.png"
        with store.transaction() as conn:
            root = conn.execute("SELECT root FROM images WHERE id = 1").fetchone()[0]
            conn.execute("INSERT INTO images (id, root, file_name, width, height) VALUES (50, ?, '../candidates.jsonl', 1, 1)", (root,))
            conn.execute("INSERT INTO images (id, root, file_name, width, height) VALUES (51, ?, ?, 1, 1)", (root, str(outside)))
        assert outside.is_file()
        assert session.image_file(store, 50) is None and session.image_file(store, 51) is None and session.image_file(store, 52) is None


def test_a_reviewer_adds_a_defect_and_the_reviewed_vocabulary_lists_it(imported):
    with ReviewStore(imported.db) as store:
        added = session.add_class(store, "weld  spatter", None, "ann", defect=True)  # defect implies thing
        assert added["new_class"] and added["class"]["thing"]
        again = session.add_class(store, "scuff", True, "ann", defect=True)  # a synonym of an existing thing
        assert not again["new_class"] and again["class"]["name"] == "scratch"
        with pytest.raises(DenseVLMError, match="a defect is a thing, not stuff"):
            session.add_class(store, "grime", False, "ann", defect=True)
        with pytest.raises(DenseVLMError, match="'steel plate' is stuff in this database"):
            session.add_class(store, "steel plate", None, "ann", defect=True)
        assert session.add_class(store, "burr", True, "ann")["new_class"]  # a plain thing is no defect
        with pytest.raises(DenseVLMError, match="a new class needs a name"):
            session.add_class(store, "   ", True, "ann")
        assert store.defect_names() == ["scratch", "weld spatter"]
    assert load_reviewed(imported.db).vocab.defects == ("scratch", "weld spatter")
