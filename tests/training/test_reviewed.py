"""Expert verdicts from the review database feed training targets and a labelled held-out set."""

from __future__ import annotations

import sqlite3

import pytest
import torch

from densevlm.data.images import open_image_source
from densevlm.data.synth import default_vocabulary, write_world
from densevlm.evaluation import EvalConfig, evaluate_reviewed
from densevlm.model import load_model
from densevlm.retrieval.candidates import write_candidates
from densevlm.retrieval.teacher import RetrievalConfig
from densevlm.review import session
from densevlm.review.importing import import_candidates
from densevlm.review.reviewed import load_reviewed
from densevlm.review.store import ReviewStore
from densevlm.training.config import TrainConfig
from densevlm.training.data import ContentDataset
from densevlm.training.trainer import Trainer


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory):
    root = tmp_path_factory.mktemp("reviewed")
    write_world(root / "world", 6, seed=77, progress=False)
    teacher = load_model("tiny-vit")
    teacher_path = teacher.save(root / "teacher.pt")
    vocab = default_vocabulary()
    write_candidates(teacher, open_image_source(root / "world"), vocab, root / "cand.jsonl",
                     RetrievalConfig(logit_scale=100.0), max_boxes=4, limit=2, progress=False)
    db = root / "review.sqlite"
    import_candidates(db, root / "cand.jsonl")
    with sqlite3.connect(db) as conn:
        ids = {key: rid for rid, key in conn.execute("SELECT id, key FROM regions ORDER BY id")}
    keys = sorted(ids)
    with ReviewStore(db) as store:
        session.add_verdict(store, ids[keys[0]], "ana", "category", category="gear")  # a thing
        session.add_verdict(store, ids[keys[1]], "ana", "category", category="cloth")  # stuff
        session.add_verdict(store, ids[keys[2]], "ana", "rejected")
        session.add_verdict(store, ids[keys[3]], "ana", "category", category="oil stain", thing=True)  # a new class
        session.add_verdict(store, ids[keys[4]], "ana", "unsure")
    return {"root": root, "db": str(db), "teacher": str(teacher_path), "keys": keys}


def test_verdicts_become_training_targets(reviewed):
    data = load_reviewed(reviewed["db"])
    assert "oil stain" in data.vocab.names and data.vocab.is_thing[data.vocab.index("oil stain")]
    cfg = TrainConfig(student="tiny-vit", teacher=reviewed["teacher"], images=str(reviewed["root"] / "world"),
                      out=str(reviewed["root"] / "run"), steps=1, batch_size=2, logit_scale=100.0, reviewed_weight=3.0)
    trainer = Trainer(cfg, progress=False, reviewed=data)
    image = next(iter(trainer.targets.reviewed))
    verdicts = trainer.targets.reviewed[image]
    item = ContentDataset(trainer.source, trainer.size)[image]
    targets = trainer.targets([item], step=0)[0]
    r = targets.retrieval
    assert targets.boxes.shape[0] == len(verdicts)
    for j, (v, label) in enumerate(verdicts):
        assert label == (None if v.category is None else data.vocab.index(v.category))
        if v.rejected:
            assert not r.kept[j] and targets.weights[j] == 1.0
        elif label is not None:
            assert int(r.label[j]) == label and bool(r.kept[j])
            assert bool(r.is_thing[j]) == data.vocab.is_thing[label]
            assert float(r.probs[j, label]) == pytest.approx(0.95)
            assert targets.weights[j] == 3.0
    labels = {v.category for v, label in verdicts if label is not None}
    assert labels and labels <= {"gear", "cloth", "oil stain"}
    out = trainer.step([item])
    assert torch.isfinite(torch.tensor(out["loss"]))


def test_reviewed_regions_are_a_labelled_held_out_set(reviewed):
    model = load_model("tiny-vit")
    result = evaluate_reviewed(model, reviewed["db"], EvalConfig(segmentation=False))
    assert result.metrics["n_segments"] == 3  # accepted or corrected: gear, cloth, oil stain
    assert result.metrics["box.n_thing"] == 2 and result.metrics["box.n_stuff"] == 1
    assert "oil stain" in result.class_names
