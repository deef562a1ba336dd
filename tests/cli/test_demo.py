"""``densevlm demo``'s stages: inspection metrics in the evaluation JSONs, the simulated review, the closing lines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from densevlm.cli.demo import _add_inspection, _inspection_line, simulated_review, summary_table
from densevlm.data.panoptic import PanopticDataset
from densevlm.data.synth import default_vocabulary, write_world
from densevlm.data.synth.categories import PLANT_WORDS
from densevlm.evaluation import EvalConfig, evaluate, subset_mean_accuracy
from densevlm.model import load_model
from densevlm.report.review import taught_line
from densevlm.review.reviewed import load_reviewed
from densevlm.vocab import load_vocabulary


def test_inspection_metrics_go_into_the_eval_jsons_and_the_last_summary_line(tmp_path):
    val = write_world(tmp_path / "val", 30, seed=21, progress=False)
    out = tmp_path / "demo"
    (out / "densevlm").mkdir(parents=True)
    (out / "before.json").write_text(json.dumps({"box.fg_bias": 80.0}))
    (out / "densevlm" / "eval.json").write_text(json.dumps({"box.fg_bias": 5.0}))
    _add_inspection("tiny-student", [out / "before.json", out / "clipself" / "eval.json"], val, default_vocabulary(), 30)
    before = json.loads((out / "before.json").read_text())
    assert before["box.fg_bias"] == 80.0 and before["inspection.n_ok"] + before["inspection.n_ng"] == 30
    assert before["inspection.roc"]["false_alarm"][-1] == 1.0
    assert not (out / "clipself" / "eval.json").exists(), "a missing run is not invented"
    line = _inspection_line(out)
    assert re.fullmatch(r"inspection: NG items caught at 2 % false alarms \d+ % before -> n/a after DenseVLM "
                        r"\(CLIPSelf n/a\)", line), line


@pytest.fixture(scope="module")
def plant(tmp_path_factory):
    """A plant-word pool (enough for 2 regions of each plant word) and held-out set."""
    root = tmp_path_factory.mktemp("plant")
    pool = write_world(root / "pool", 60, seed=1_000_000, progress=False, plant_words=True)
    val = write_world(root / "val", 12, seed=2_000_000, progress=False, plant_words=True)
    return root, pool, val


def test_simulated_review_teaches_the_plant_words_from_the_pool_and_scores_the_held_out_set(plant):
    root, pool, val = plant
    known = default_vocabulary()
    things = [n for n, t in zip(known.names, known.is_thing) if t]
    doc = simulated_review(root / "demo", "tiny-student", pool, val, known, shots=2)
    assert json.loads((root / "demo" / "review.json").read_text()) == doc
    reviewed = load_reviewed(doc["database"])
    words = {r.category for r in reviewed.regions} - set(known.names)
    assert set(doc["new_words"]) == words == PLANT_WORDS, "N = the plant words with reviewed regions"
    assert doc["new_words"] == {w: 2 for w in words} and doc["regions"] == len(reviewed.regions) == 8 + 2 * len(known)
    assert {Path(r.image_path).parent for r in reviewed.regions} == {(pool / "images").resolve()}, "never the held-out set"
    assert reviewed.vocab.names[: len(things)] == tuple(things) and len(reviewed.vocab) == len(known) + 4
    adapted = load_vocabulary(doc["vocabulary"])
    assert {n: c for n, c in zip(adapted.names, adapted.counts) if n not in known.names} == doc["new_words"]
    assert {n: c for n, c in zip(adapted.names, adapted.counts) if n in known.names} == {n: 2 for n in known.names}
    assert set(adapted.defects) == set(load_vocabulary(val / "vocab.txt").defects)  # burr, weld spatter, porosity too
    model, cfg = load_model("tiny-student"), EvalConfig(crops=False, segmentation=False)
    for key, vocab in (("text_only", load_vocabulary(val / "vocab.txt")), ("reviewed", adapted)):
        result = evaluate(model, PanopticDataset(val), vocab, cfg, progress=False)
        assert doc[key]["new_words"] == subset_mean_accuracy(result.per_class, sorted(PLANT_WORDS)), key
        assert doc[key]["other_things"] == subset_mean_accuracy(result.per_class, things), key
        assert doc[key]["fg_bias"] == result.metrics["box.fg_bias"], key
    assert taught_line(doc).startswith(f"the expert taught 4 new words (8 regions, and confirmed {2 * len(known)} of "
                                       "the known classes): their box mAcc ")
    again = simulated_review(root / "demo", "tiny-student", pool, val, known, shots=1)  # a demo run again
    assert again["regions"] == 4 + len(known) == len(load_reviewed(again["database"]).regions)


def test_the_closing_table_averages_the_known_classes_and_gives_the_plant_words_a_line(tmp_path):
    known = default_vocabulary()
    names = list(known.names) + ["burr", "weld spatter", "porosity", "rivet"]
    thing = list(known.is_thing) + [True] * 4
    accuracy = {"bolt": 80.0, "nut": 40.0, "burr": 0.0, "rivet": 10.0, "cloth": 90.0}

    def ev(fg):
        rows = [{"class": n, "isthing": t, "n": 5 if n in accuracy else 0, "box_acc1": accuracy.get(n, float("nan"))}
                for n, t in zip(names, thing)]
        return {"per_class": rows, "box.fg_bias": fg, "class_names": names}

    (tmp_path / "densevlm").mkdir()
    (tmp_path / "before.json").write_text(json.dumps(ev(80.0)))
    (tmp_path / "densevlm" / "eval.json").write_text(json.dumps(ev(4.5)))
    lines = summary_table(tmp_path, known).splitlines()
    assert "16 classes the VLM knows" in lines[0] and len(lines) == 4  # no clipself run: no row
    assert lines[1].split() == ["before", "60.0", "90.0", "80.0"] and lines[2].split()[0] == "densevlm"
    assert lines[3] == "plant words, text only (box mAcc %, chance 5): before 5.0, densevlm 5.0"
