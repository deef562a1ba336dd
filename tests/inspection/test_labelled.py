"""OK / NG ground truth from a review database: an image is NG when an expert gave a region a defect class."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from densevlm.data.images import open_image_source
from densevlm.data.synth import write_world
from densevlm.inspection.labelled import load_labelled
from densevlm.model import load_model
from densevlm.retrieval.candidates import write_candidates
from densevlm.retrieval.teacher import RetrievalConfig
from densevlm.review import ReviewStore, add_verdict, import_candidates
from densevlm.data.synth import default_vocabulary


def test_review_database_verdicts_mark_images_ok_or_ng(tmp_path):
    write_world(tmp_path / "world", 3, seed=5, progress=False)
    vocab = default_vocabulary()
    write_candidates(load_model("tiny-vit"), open_image_source(tmp_path / "world"), vocab, tmp_path / "cand.jsonl",
                     RetrievalConfig(logit_scale=100.0), max_boxes=3, limit=3, progress=False)
    db = tmp_path / "review.sqlite"
    import_candidates(db, tmp_path / "cand.jsonl")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT r.id, i.file_name FROM regions r JOIN images i ON i.id = r.image_id ORDER BY r.id").fetchall()
    by_image: dict[str, list[int]] = {}
    for rid, path in rows:
        by_image.setdefault(path, []).append(rid)
    first, second, third = sorted(by_image)
    with ReviewStore(db) as store:
        add_verdict(store, by_image[first][0], "ana", "category", category="gear")
        add_verdict(store, by_image[first][1], "ana", "category", category="Dent")  # a defect, any case
        add_verdict(store, by_image[second][0], "ana", "category", category="bolt")
        add_verdict(store, by_image[second][1], "ana", "rejected")
    images = {Path(im.path).name: im for im in load_labelled(db, vocab)}
    assert set(images) == {Path(first).name, Path(second).name}  # the third image has no verdict: unlabelled
    assert images[Path(first).name].ng and list(images[Path(first).name].holds) == [False, False, True, False]
    assert not images[Path(second).name].ng
