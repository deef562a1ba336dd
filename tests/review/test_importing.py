"""Importing candidates: regions, candidates and vocabulary stored; re-imports idempotent; failed imports write nothing."""

from __future__ import annotations

import pytest

from densevlm.errors import DenseVLMError
from densevlm.review import session
from densevlm.review.importing import import_candidates
from densevlm.review.reviewed import load_reviewed
from densevlm.review.store import ReviewStore

from .conftest import header, region, region_id, row_counts, write_candidates


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
        shown = session.region(store, region_id(store, "a.png#1"))
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
        session.add_verdict(store, rid, "ann", "category", "nut")
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
        mine = session.history(store, "ann")
    assert [(v["key"], v["status"], v["category"]) for v in mine] == [("a.png#0", "corrected", "nut")]


def test_reimport_with_a_changed_region_keeps_the_first(imported, caplog):
    changed = [dict(r) for r in imported.regions]
    changed[0] = {**changed[0], "box": [5.0, 5.0, 21.0, 21.0]}
    path = write_candidates(imported.root / "changed.jsonl", header(imported.images), changed)
    summary = import_candidates(imported.db, path)
    assert summary.regions_added == 0 and summary.regions_differing == 1
    with ReviewStore(imported.db) as store:
        assert session.region(store, region_id(store, "a.png#0"))["box"] == [4.0, 4.0, 20.0, 20.0]
    assert "keeps the first import" in caplog.text


def test_failed_import_writes_nothing(imported):
    before = row_counts(imported.db)
    bad = imported.regions + [region("a.png#9", "missing.png", (64, 64), [1.0, 1.0, 5.0, 5.0], [("nut", 0.5)])]
    path = write_candidates(imported.root / "bad.jsonl", header(imported.images), [bad[0]] + bad[-1:])
    with pytest.raises(DenseVLMError, match="missing.png' not found"):
        import_candidates(imported.db, path)
    assert row_counts(imported.db) == before


def test_a_world_folder_for_images_points_at_its_images_subfolder(dataset):
    # the world folder of `densevlm synth` holds images/ beside panoptic.json
    with pytest.raises(DenseVLMError) as err:
        import_candidates(dataset.db, dataset.candidates, images_dir=dataset.root)
    assert str(err.value).endswith(f"image 'a.png' not found in {dataset.root.resolve()}; pass --images "
                                   f"{dataset.images.resolve()}")


def test_candidates_of_another_folder_with_the_same_file_names_are_refused(imported, tmp_path):
    import shutil

    other = tmp_path / "other" / "images"
    shutil.copytree(imported.images, other)
    before = row_counts(imported.db)
    with pytest.raises(DenseVLMError) as err:
        import_candidates(imported.db, imported.candidates, images_dir=other)
    message = str(err.value)
    assert f"region 'a.png#0' is already in this database for an image in {imported.images.resolve()}" in message
    assert f"this file's images are in {other.resolve()}" in message and "--db OTHER.sqlite" in message
    assert row_counts(imported.db) == before


def test_images_flag_wins_over_header(dataset, tmp_path):
    path = write_candidates(tmp_path / "elsewhere.jsonl", header(tmp_path / "no-such-dir"), dataset.regions)
    with pytest.raises(DenseVLMError, match="no-such-dir"):
        import_candidates(dataset.db, path)
    summary = import_candidates(dataset.db, path, images_dir=dataset.images)
    assert summary.regions_added == 8
    regions = {r.region_id: r for r in load_reviewed(dataset.db).regions}
    assert regions == {}
    with ReviewStore(dataset.db) as store:
        assert session.image_file(store, 1).parent == dataset.images.resolve()
