"""Kind: a run whose teacher keeps no region learned nothing; it used to end with "final loss nan"
and "kept 0.0%". Now one line says so and why, and no NaN loss is logged anywhere."""

from __future__ import annotations

import json

import torch

from densevlm.data.synth import write_world
from densevlm.model import load_model
from tests.robustness.inprocess import run_main


def test_a_teacher_that_keeps_no_region_is_one_line_and_no_nan_is_logged(tmp_path, capsys):
    write_world(tmp_path / "images", 4, seed=4, progress=False)
    model = str(load_model("tiny-vit").save(tmp_path / "model.pt"))
    capsys.readouterr()  # the random-init warning of building the test model is not the run's output
    out = tmp_path / "run"
    # a flat softmax (logit scale 1 over near-identical random class embeddings) never reaches 0.9;
    # part-blob regions (default --teacher-parts 5) are taught whatever their confidence, so none here
    code = run_main(["train", "--student", model, "--teacher", model, "--images", str(tmp_path / "images"), "--out", str(out),
                     "--steps", "2", "--batch-size", "2", "--logit-scale", "1", "--threshold", "0.9", "--log-every", "1",
                     "--teacher-parts", "0", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "\n" not in err and "Traceback" not in err, err
    assert str(out) in err and "nothing was learned" in err and "--threshold 0.9" in err and "teacher" in err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["loss"] is None and r["kept_frac"] == 0.0 for r in rows)
    assert "NaN" not in (out / "metrics.jsonl").read_text()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    assert "train/loss" not in events.Tags()["scalars"] and "train/kept_frac" in events.Tags()["scalars"]
    summary = json.loads((out / "retrieval.json").read_text())["overall"]
    assert summary["regions"] > 0 and summary["kept_frac"] == 0.0
    saved, original = load_model(str(out / "last.pt")), load_model(model)  # no update: last.pt is the student
    assert torch.allclose(saved.backbone.clip.visual.proj, original.backbone.clip.visual.proj, atol=1e-6)
