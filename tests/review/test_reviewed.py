"""Reviewed regions for consumers: categories are in the reviewed vocabulary, rejected regions are marked."""

from __future__ import annotations

from densevlm.review import session
from densevlm.review.reviewed import load_reviewed
from densevlm.review.store import ReviewStore

from .conftest import region_id


def test_categories_are_in_the_reviewed_vocabulary(imported):
    with ReviewStore(imported.db) as store:
        session.add_verdict(store, region_id(store, "a.png#0"), "ann", "category", "bolt")
        session.add_verdict(store, region_id(store, "a.png#1"), "ann", "rejected")
        session.add_verdict(store, region_id(store, "c.png#0"), "ann", "unsure")
        session.add_verdict(store, region_id(store, "c.png#2"), "ann", "category", "washer", thing=True)
    data = load_reviewed(imported.db)
    assert data.vocab.names == ("bolt", "scratch", "nut", "washer", "conveyor belt", "steel plate")
    by_box = {t.box: t for t in data.regions}
    assert len(data.regions) == 4 and len(by_box) == 4
    bolt, rejected, unsure, washer = (by_box[b] for b in [(4.0, 4.0, 20.0, 20.0), (20.0, 10.0, 44.0, 30.0),
                                                          (2.0, 2.0, 24.0, 30.0), (10.0, 5.0, 20.0, 15.0)])
    assert (bolt.category, bolt.thing, bolt.rejected) == ("bolt", True, False)
    assert (washer.category, washer.status, data.vocab.is_thing[data.vocab.index("washer")]) == ("washer", "corrected", True)
    assert (rejected.category, rejected.rejected) == (None, True)
    assert (unsure.category, unsure.status, unsure.rejected) == (None, "unsure", False)
    assert (washer.width, washer.height) == (48, 32)
    assert washer.image_path == str(imported.images.resolve() / "c.png")


def test_the_headers_defects_reach_the_reviewed_vocabulary(dataset):
    import json

    from densevlm.review.importing import import_candidates

    lines = dataset.candidates.read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    first["vocabulary"]["defects"] = ["scuff"]  # a synonym: the class is scratch
    with_defects = dataset.root / "defects.jsonl"
    with_defects.write_text("\n".join([json.dumps(first)] + lines[1:]) + "\n", encoding="utf-8")
    import_candidates(dataset.db, with_defects)
    assert load_reviewed(dataset.db).vocab.defects == ("scratch",)
    plain = dataset.root / "plain.sqlite"
    import_candidates(plain, dataset.candidates)  # a header without [defects] (files written before they were kept)
    assert load_reviewed(plain).vocab.defects == ()
