"""Operating points bind a model and a vocabulary; `inspect` gives verdicts and refuses foreign points."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import densevlm
from densevlm.cli.main import main
from densevlm.errors import DenseVLMError
from densevlm.inspection.calibrate import calibrate
from densevlm.inspection.labelled import load_labelled
from densevlm.inspection.operating_point import OperatingPoint
from densevlm.data.synth import default_vocabulary


@pytest.fixture(scope="module")
def student():
    return densevlm.load_model("tiny-student")


def test_labelled_world_marks_images_holding_defects(labelled_world):
    import json

    vocab = default_vocabulary()
    images = load_labelled(labelled_world, vocab)
    data = json.loads((labelled_world / "panoptic.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    for image, ann in zip(images, data["annotations"]):
        held = {names[s["category_id"]] for s in ann["segments_info"]} & set(vocab.defects)
        assert {d for d, h in zip(vocab.defects, image.holds) if h} == held
    with pytest.raises(DenseVLMError, match=r"no \[defects\] section"):
        load_labelled(labelled_world, densevlm.Vocabulary.from_lists(["bolt"], ["floor"]))


def test_calibrated_point_gives_verdicts_and_refuses_other_models(labelled_world, student, tmp_path):
    vocab = default_vocabulary()
    images = load_labelled(labelled_world, vocab)
    op = calibrate(student, images, vocab, 0.2, model_name="tiny-student", data=str(labelled_world), n_resamples=100)
    n_ok = sum(not im.ng for im in images)
    assert op.calibration["false_alarm"]["value"] <= 0.2 + 1e-9 and op.calibration["n_ok"] == n_ok
    path = op.save(tmp_path / "op.json")
    with pytest.raises(DenseVLMError, match="exists; pass --overwrite"):
        op.save(path)
    loaded = OperatingPoint.load(path)
    assert loaded.ng_threshold == op.ng_threshold and loaded.vocab == vocab
    verdicts = densevlm.inspect(student, [im.path for im in images], path)
    ok_called_ng = sum(v.verdict == "NG" for v, im in zip(verdicts, images) if not im.ng)
    assert ok_called_ng == round(op.calibration["false_alarm"]["value"] * n_ok)
    for v in verdicts:
        assert v.verdict == ("NG" if v.score >= op.ng_threshold else "OK")
        assert all(d.score >= op.ng_threshold for d in v.defects) and bool(v.defects) == (v.verdict == "NG")
    teacher = densevlm.load_model("tiny-teacher")
    with pytest.raises(DenseVLMError, match="calibrated for another model .tiny-student"):
        densevlm.inspect(teacher, images[0].path, path)
    other = densevlm.Vocabulary.from_lists(list(vocab.names[:10]), list(vocab.names[10:]), ["scratch"])
    with pytest.raises(DenseVLMError, match="another vocabulary"):
        densevlm.inspect(student, images[0].path, path, vocab=other)


def test_cli_calibrate_then_inspect(labelled_world, tmp_path, capsys):
    op = tmp_path / "op.json"
    args = ["calibrate", "--model", "tiny-student", "--data", str(labelled_world), "--max-false-alarm", "0.1",
            "--out", str(op), "--bootstrap", "100", "--unsure-band", "0.2"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--out {op}: exists already; pass --overwrite" in err and err.count("\n") == 1
    assert "embedding" not in err, "the output is checked before any work"
    out = tmp_path / "v"
    status = main(["inspect", str(labelled_world), "--operating-point", str(op), "--out", str(out), "--fail-on-ng"])
    rows = list(csv.DictReader(open(out / "verdicts.csv")))
    assert len(rows) == 24 and {r["verdict"] for r in rows} <= {"OK", "UNSURE", "NG"}
    assert status == (1 if any(r["verdict"] == "NG" for r in rows) else 0)
    assert sorted(p.name for p in (out / "overlays").glob("*.png")) == sorted(f"{Path(r['image']).name}.overlay.png" for r in rows)
    assert all((out / r["overlay"]).is_file() for r in rows)
    assert main(["inspect", str(labelled_world), "--operating-point", str(op), "--out", str(out)]) == 2
    assert f"--out {out}: exists already; pass --overwrite" in capsys.readouterr().err
    assert main(["inspect", str(labelled_world), "--operating-point", str(op), "--out", str(out), "--model",
                 "tiny-teacher", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "calibrated for another model" in err and err.count("\n") == 1


def test_overlays_of_images_sharing_a_stem_are_kept_apart_and_overwrite_clears_old_ones(labelled_world, tmp_path):
    import shutil

    from PIL import Image

    op = tmp_path / "op.json"
    assert main(["calibrate", "--model", "tiny-student", "--data", str(labelled_world), "--max-false-alarm", "0.1",
                 "--out", str(op), "--bootstrap", "10"]) == 0
    line = tmp_path / "line"
    (line / "cam2").mkdir(parents=True)
    scenes = sorted((labelled_world / "images").glob("*.png"))
    shutil.copy(scenes[0], line / "001.png")
    Image.open(scenes[1]).convert("RGB").save(line / "001.jpg", quality=95)
    shutil.copy(scenes[2], line / "cam2" / "001.png")
    out = tmp_path / "v"
    assert main(["inspect", str(line), "--operating-point", str(op), "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "verdicts.csv")))
    assert sorted(r["overlay"] for r in rows) == ["overlays/001.jpg.overlay.png", "overlays/001.png.overlay.png",
                                                  "overlays/cam2__001.png.overlay.png"]
    drawn = {r["overlay"]: Image.open(out / r["overlay"]).size for r in rows}
    assert len(drawn) == 3 and all(size[0] >= 64 for size in drawn.values())
    Image.new("RGB", (8, 8)).save(out / "overlays" / "mine.png")  # not an overlay: stays
    assert main(["inspect", str(line / "001.png"), "--operating-point", str(op), "--out", str(out), "--overwrite",
                 "--no-overlays"]) == 0
    rows = list(csv.DictReader(open(out / "verdicts.csv")))
    assert [r["overlay"] for r in rows] == [""] and [p.name for p in (out / "overlays").glob("*.png")] == ["mine.png"]


def test_blank_frames_are_unsure_and_too_small_images_are_errors(labelled_world, student, tmp_path):
    from PIL import Image

    vocab = default_vocabulary()
    op = calibrate(student, load_labelled(labelled_world, vocab), vocab, 0.2, model_name="tiny-student",
                   data=str(labelled_world), n_resamples=10)
    Image.new("RGB", (64, 64), (0, 0, 0)).save(tmp_path / "black.png")
    noise = np.random.default_rng(0).normal(128, 3, (64, 64, 3)).clip(0, 255).astype(np.uint8)
    Image.fromarray(noise).save(tmp_path / "white.png")  # grey with sensor noise: still one flat colour
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    Image.new("RGB", (640, 4)).save(tmp_path / "strip.png")
    scene = sorted((labelled_world / "images").glob("*.png"))[0]
    files = [tmp_path / "black.png", tmp_path / "white.png", tmp_path / "dot.png", tmp_path / "strip.png", scene]
    verdicts = densevlm.inspect(student, files, op)
    blank = "blank frame: one flat colour"
    assert [(v.verdict, v.reason.startswith(blank)) for v in verdicts[:2]] == [("UNSURE", True)] * 2
    assert [v.verdict for v in verdicts[2:4]] == ["ERROR", "ERROR"]
    assert verdicts[2].reason == f"{files[2]}: image is 1x1 px, too small to recognise anything (at least 8 px on each side)"
    assert verdicts[3].reason.startswith(f"{files[3]}: image is 640x4 px, too small")
    assert verdicts[4].verdict != "ERROR" and not verdicts[4].reason.startswith(blank)


def test_an_interrupted_inspect_resumes_where_it_stopped(labelled_world, tmp_path, monkeypatch, capsys):
    import densevlm.cli.inspect as command
    import densevlm.inspection.verdict as verdict

    op, other = tmp_path / "op.json", tmp_path / "other.json"
    for path, rate in ((op, "0.1"), (other, "0.2")):
        assert main(["calibrate", "--model", "tiny-student", "--data", str(labelled_world), "--max-false-alarm",
                     rate, "--out", str(path), "--bootstrap", "10"]) == 0
    whole, out = tmp_path / "whole", tmp_path / "v"
    assert main(["inspect", str(labelled_world), "--operating-point", str(op), "--out", str(whole)]) == 0
    monkeypatch.setattr(command, "CHUNK", 5)
    real, seen = verdict.inspect, []

    def interrupted(model, images, *args, **kwargs):
        if len(seen) == 2 * 5:  # two chunks done
            raise KeyboardInterrupt
        seen.extend(images)
        return real(model, images, *args, **kwargs)

    monkeypatch.setattr(verdict, "inspect", interrupted)
    run = ["inspect", str(labelled_world), "--operating-point", str(op), "--out", str(out)]
    assert main(run) == 130
    assert "10 of 24 verdicts are in" in capsys.readouterr().err
    partial = out / command.PARTIAL
    assert not (out / "verdicts.csv").exists() and len(partial.read_text().splitlines()) == 1 + 10
    with open(partial, "ab") as f:
        f.write(b'{"image": "cut off by a power c')
    capsys.readouterr()
    assert main(run) == 2
    assert "verdicts.partial.jsonl: holds an interrupted inspect; --resume continues it" in capsys.readouterr().err
    assert main(["inspect", str(labelled_world), "--operating-point", str(other), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "the interrupted run had other --operating-point (another file content); resume" in err
    assert err.count("\n") == 1, "a refused resume is one line (no 'verdicts are in' warning)"
    monkeypatch.setattr(verdict, "inspect", real)
    done = list(seen)
    seen.clear()
    monkeypatch.setattr(verdict, "inspect",
                        lambda model, images, *a, **k: seen.extend(images) or real(model, images, *a, **k))
    assert main(run + ["--resume"]) == 0
    assert len(seen) == 24 - 10 and not set(map(str, seen)) & set(map(str, done))
    assert (out / "verdicts.csv").read_text() == (whole / "verdicts.csv").read_text() and not partial.exists()
    drawn = sorted(p.name for p in (out / "overlays").iterdir())
    assert drawn == sorted(p.name for p in (whole / "overlays").iterdir())
    assert main(run + ["--resume"]) == 2
    assert "no interrupted inspect to resume" in capsys.readouterr().err
