"""The simulated expert: the first K ground-truth regions of each class, recorded through the review store."""

from __future__ import annotations

import json

import pytest

from densevlm.data.synth import default_vocabulary, write_world
from densevlm.errors import DenseVLMError
from densevlm.review.reviewed import load_reviewed
from densevlm.review.simulated import EXPERT, expert_database, expert_examples
from densevlm.review.store import ReviewStore


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("sim") / "pool", 30, seed=1_000_000, progress=False, plant_words=True)


def _segments(pool, name):
    """Every (file, XYXY box) of class ``name`` in the pool's JSON, in image then segment order."""
    data = json.loads((pool / "panoptic.json").read_text())
    cid = next(c["id"] for c in data["categories"] if c["name"] == name)
    return [(a["file_name"], (s["bbox"][0], s["bbox"][1], s["bbox"][0] + s["bbox"][2], s["bbox"][1] + s["bbox"][3]))
            for a in data["annotations"] for s in a["segments_info"] if s["category_id"] == cid]


def test_the_expert_labels_the_first_k_segments_of_each_class(pool):
    regions = expert_examples(pool, ["rivet", "bolt", "cloth"], 2)
    for name, thing in (("rivet", True), ("bolt", True), ("cloth", False)):
        mine = [r for r in regions if r.category == name]
        assert [(r.image_path.rsplit("/", 1)[1], r.box) for r in mine] == _segments(pool, name)[:2]
        assert all(r.thing is thing and (r.width, r.height) == (64, 64) for r in mine)
    with pytest.raises(DenseVLMError, match="fewer than 1000 segments of rivet"):
        expert_examples(pool, ["rivet"], 1000)
    with pytest.raises(DenseVLMError, match="no category 'flange'"):
        expert_examples(pool, ["rivet", "flange"], 1)
    with pytest.raises(DenseVLMError, match="shots must be positive"):
        expert_examples(pool, ["rivet"], 0)


def test_the_database_holds_the_verdicts_and_the_words_the_expert_added(pool, tmp_path):
    known = default_vocabulary()
    examples = expert_examples(pool, ["burr", "rivet", "bolt"], 2)
    db = expert_database(examples, known, pool / "images", tmp_path / "review.sqlite")
    reviewed = load_reviewed(db)
    assert [(r.category, r.box, r.reviewer) for r in reviewed.regions] == [(e.category, e.box, EXPERT) for e in examples]
    assert {r.category: r.status for r in reviewed.regions} == {"burr": "corrected", "rivet": "corrected",
                                                                "bolt": "accepted"}  # bolt: the placeholder candidate
    with ReviewStore(db) as store:
        added = {c["name"]: c["thing"] for c in store.classes() if c["name"] not in known.names}
    assert added == {"burr": True, "rivet": True}
    assert set(reviewed.vocab.defects) == set(known.defects)  # no defects given: burr is a plain thing


def test_new_words_named_as_defects_are_added_as_defects(pool, tmp_path):
    known = default_vocabulary()
    examples = expert_examples(pool, ["burr", "rivet", "bolt"], 2)
    db = expert_database(examples, known, pool / "images", tmp_path / "review.sqlite",
                         defects=["burr", "porosity", "scratch"])  # porosity: no region; scratch: known already
    assert set(load_reviewed(db).vocab.defects) == set(known.defects) | {"burr"}
    with pytest.raises(DenseVLMError, match="exists already"):
        expert_database(examples, known, pool / "images", tmp_path / "review.sqlite")
    with pytest.raises(DenseVLMError, match="not in the images folder"):
        expert_database(examples, known, tmp_path, tmp_path / "other.sqlite")
