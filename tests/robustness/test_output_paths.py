"""Kind: an output path is checked before any work, and never replaces one of the command's inputs.

``check_output`` is the mechanism every command uses; eval --json, review export --out and
review stats --json are its first call sites.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from densevlm.cli.main import main
from densevlm.errors import DenseVLMError
from densevlm.fileio import check_output
from tests.evaluation.stubs import write_panoptic
from tests.review.conftest import make_dataset


def _refused(match: str, *args, **kwargs) -> str:
    with pytest.raises(DenseVLMError) as info:
        check_output(*args, **kwargs)
    message = str(info.value)
    assert match in message and "\n" not in message, message
    return message


def test_a_file_output_that_is_a_directory_and_the_reverse(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    assert _refused("is a directory; give a file path", tmp_path).startswith(f"--out {tmp_path}:")
    _refused("is an existing file; give a directory", tmp_path / "file.txt", "dir", overwrite=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_an_output_under_a_tree_that_takes_no_files(tmp_path):
    _refused("cannot write under /proc", "/proc/x/y/report.json")
    (tmp_path / "plain").write_text("x")
    _refused(f"because {tmp_path / 'plain'} is a file", tmp_path / "plain" / "sub" / "out.json", flag="--json")


def test_an_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path):
    db = tmp_path / "review.sqlite"
    db.write_bytes(b"SQLite format 3\x00")
    os.symlink(db, tmp_path / "link.sqlite")
    for same in (db, tmp_path / "link.sqlite", tmp_path / "." / "review.sqlite"):
        _refused("is also an input of this command", same, inputs=[None, db], overwrite=True)
    images = tmp_path / "images"
    (images / "a.png").parent.mkdir()
    (images / "a.png").write_bytes(b"png")
    _refused("holds the input", tmp_path, "dir", inputs=[images / "a.png"], overwrite=True)
    assert db.read_bytes() == b"SQLite format 3\x00"


def test_an_earlier_result_needs_overwrite(tmp_path):
    old = tmp_path / "metrics.json"
    old.write_text("{}")
    _refused("exists already; pass --overwrite to replace it", old)
    assert check_output(old, overwrite=True) == old
    (tmp_path / "run").mkdir()
    assert check_output(tmp_path / "run", "dir") == tmp_path / "run"  # empty: nothing to lose
    (tmp_path / "run" / "last.pt").write_bytes(b"x")
    _refused("exists already", tmp_path / "run", "dir")
    assert check_output(tmp_path / "new" / "deeper" / "out.json") == tmp_path / "new" / "deeper" / "out.json"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "run"]


def _world(tmp_path: Path) -> Path:
    return write_panoptic(tmp_path / "world", [[(1, 0, (4, 4, 12, 12))]], [("bolt", True), ("floor", False)], background=1)


@pytest.mark.parametrize("target, fragment", [
    ("panoptic.json", "is also an input of this command"),
    ("images", "is a directory; give a file path"),
    ("/proc/x/metrics.json", "cannot write under /proc"),
])
def test_eval_checks_json_before_loading_anything(tmp_path, capsys, target, fragment):
    world = _world(tmp_path)
    out = world / target if not target.startswith("/") else Path(target)
    before = (world / "panoptic.json").read_bytes()
    code = main(["eval", "--data", str(world), "--model", "no-such-model", "--json", str(out), "--overwrite"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and fragment in lines[0] and f"--json {out}" in lines[0]
    assert (world / "panoptic.json").read_bytes() == before


def test_eval_refuses_an_earlier_result_without_overwrite(tmp_path, capsys):
    world = _world(tmp_path)
    old = tmp_path / "metrics.json"
    old.write_text("{}")
    assert main(["eval", "--data", str(world), "--model", "no-such-model", "--json", str(old)]) == 2
    assert "exists already; pass --overwrite" in capsys.readouterr().err
    assert old.read_text() == "{}"


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
@pytest.mark.parametrize("verb", ["export", "stats"])
def test_review_outputs_never_replace_the_database(tmp_path, capsys, verb, overwrite):
    from densevlm.review.importing import import_candidates

    data = make_dataset(tmp_path)
    import_candidates(data.db, data.candidates, None)
    before = data.db.read_bytes()
    flag = ["--format", "jsonl", "--out"] if verb == "export" else ["--json"]
    assert main(["review", verb, "--db", str(data.db), *flag, str(data.db), *overwrite]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "is also an input of this command" in errors[0] and str(data.db) in errors[0]
    assert data.db.read_bytes() == before


def _one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def user_files(tmp_path):
    """A folder of things a user made: an image, a vocabulary, a plain file, an earlier run."""
    from PIL import Image

    (tmp_path / "photos").mkdir()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "photos" / "a.png")
    (tmp_path / "vocab.txt").write_text("[things]\nbolt\n[stuff]\nfloor\n")
    (tmp_path / "notes.txt").write_text("mine\n")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("last.pt", "state.pt", "config.yaml", "metrics.jsonl"):
        (run / name).write_bytes(b"earlier " + name.encode())
    (run / "my-notes.md").write_text("keep me\n")
    return tmp_path


_PROC = "/proc/x/y"


@pytest.mark.parametrize("argv, fragment", [
    (["segment", "{photos}", "--out", "{notes}"], "--out {notes}: is an existing file; give a directory"),
    (["segment", "{photos}", "--vocab", "{vocab}", "--out", "{root}"], "holds the input"),
    (["retrieve", "--images", "{photos}", "--vocab", "{vocab}", "--out", "{vocab}"],
     "--out {vocab}: is also an input of this command"),
    (["retrieve", "--images", "{photos}", "--vocab", "{vocab}", "--out", "{vocab}", "--overwrite"],
     "--out {vocab}: is also an input of this command"),
    (["retrieve", "--images", "{photos}", "--out", "{notes}"], "--out {notes}: exists already; pass --overwrite"),
    (["export", "--model", "no-such-model", "--out", "{run}"], "--out {run}: exists already; pass --overwrite"),
    (["export", "--model", "no-such-model", "--out", "{notes}"], "--out {notes}: is an existing file"),
    (["train", "--images", "{photos}", "--out", "{run}"], "--out {run}: holds an earlier run (last.pt, state.pt, "
     "config.yaml, metrics.jsonl); pass --resume to continue it or --overwrite to start again"),
    (["train", "--images", "{photos}", "--out", "{notes}"], "--out {notes}: is an existing file"),
    (["report", "{run}", "--out", "{notes}"], "--out {notes}: exists already; pass --overwrite"),
    (["synth", "--out", "{run}"], "--out {run}: exists already; pass --overwrite"),
    (["pretrain", "--data", "{photos}", "--out", "{notes}"], "--out {notes}: exists already; pass --overwrite"),
    (["demo", "--out", "{run}"], "--out {run}: exists already; pass --overwrite"),
    (["calibrate", "--data", "{photos}", "--max-false-alarm", "0.02", "--out", "{notes}"],
     "--out {notes}: exists already; pass --overwrite"),
    (["calibrate", "--data", "{photos}", "--vocab", "{vocab}", "--max-false-alarm", "0.02", "--out", "{vocab}",
      "--overwrite"], "--out {vocab}: is also an input of this command"),
    (["inspect", "{photos}", "--operating-point", "{notes}", "--out", "{run}"],
     "--out {run}: exists already; pass --overwrite"),
    (["inspect", "{photos}", "--operating-point", "{notes}", "--out", "{notes}"], "--out {notes}: is an existing file"),
    (["monitor", "--reference", "{photos}", "--batch", "{photos}", "--json", "{notes}"],
     "--json {notes}: exists already; pass --overwrite"),
] + [([*argv, _PROC], f"--out {_PROC}: cannot write under /proc") for argv in (
    ["segment", "{photos}", "--out"], ["retrieve", "--images", "{photos}", "--out"],
    ["export", "--model", "no-such-model", "--out"], ["train", "--images", "{photos}", "--out"],
    ["report", "{run}", "--out"], ["synth", "--out"], ["pretrain", "--data", "{photos}", "--out"], ["demo", "--out"],
    ["calibrate", "--data", "{photos}", "--max-false-alarm", "0.02", "--out"],
    ["inspect", "{photos}", "--operating-point", "{notes}", "--out"],
)])
def test_every_command_checks_its_outputs_before_any_work(user_files, capsys, argv, fragment):
    if _PROC in argv and not sys.platform.startswith("linux"):
        pytest.skip("/proc is Linux's")
    names = {"photos": user_files / "photos", "vocab": user_files / "vocab.txt", "notes": user_files / "notes.txt",
             "run": user_files / "run", "root": user_files}
    before = _snapshot(user_files)
    code = main([a.format(**names) for a in argv])
    line = _one_error_line(capsys)
    assert code == 2 and fragment.format(**names) in line, line
    assert _snapshot(user_files) == before


def test_review_export_and_stats_replace_an_earlier_file_only_with_overwrite(tmp_path, capsys):
    from densevlm.review.importing import import_candidates

    data = make_dataset(tmp_path)
    import_candidates(data.db, data.candidates, None)
    old = tmp_path / "old.jsonl"
    old.write_text("earlier\n")
    for argv in (["export", "--format", "jsonl", "--out", str(old)], ["stats", "--json", str(old)]):
        assert main(["review", argv[0], "--db", str(data.db), *argv[1:]]) == 2
        line = _one_error_line(capsys)
        assert f"{old}: exists already; pass --overwrite" in line
        assert old.read_text() == "earlier\n"
    assert main(["review", "export", "--db", str(data.db), "--format", "jsonl", "--out", str(old), "--overwrite"]) == 0
    assert old.read_text() != "earlier\n"


def test_review_init_refuses_a_database_path_that_is_its_candidates_file(tmp_path, capsys):
    data = make_dataset(tmp_path)
    before = data.candidates.read_bytes()
    assert main(["review", "init", "--candidates", str(data.candidates), "--db", str(data.candidates)]) == 2
    assert f"--db {data.candidates}: is also an input of this command" in _one_error_line(capsys)
    assert data.candidates.read_bytes() == before


def test_train_overwrite_removes_only_the_earlier_run_files(user_files):
    from densevlm.cli.train import check_run_dir

    run = user_files / "run"
    (run / "tb").mkdir()
    (run / "tb" / "events").write_bytes(b"x")
    check_run_dir(str(run), [], resume=True, overwrite=False)  # --resume continues it: nothing removed
    assert (run / "state.pt").is_file()
    with pytest.raises(DenseVLMError, match="pass one of them"):
        check_run_dir(str(run), [], resume=True, overwrite=True)
    check_run_dir(str(run), [], resume=False, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["my-notes.md"]
    assert (run / "my-notes.md").read_text() == "keep me\n"


def test_train_into_an_earlier_run_needs_resume_or_overwrite(tmp_path, capsys):
    """End to end: a second `train --out RUN` is refused with RUN untouched; --overwrite starts
    clean (metrics.jsonl holds the new run only)."""
    from densevlm.data.synth import write_world

    write_world(tmp_path / "world", 4, seed=5, progress=False)
    run = tmp_path / "run"
    argv = ["train", "--images", str(tmp_path / "world"), "--out", str(run), "--steps", "2", "--batch-size", "2",
            "--max-boxes", "2", "--log-every", "1", "--save-every", "2", "-q"]
    assert main(argv) == 0
    assert str(run / "last.pt") in capsys.readouterr().out
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text() + '{"step": 999}\n')  # marks the old run
    before = _snapshot(run)
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert f"--out {run}: holds an earlier run (last.pt, state.pt" in line and "--overwrite to start again" in line
    assert _snapshot(run) == before
    assert main([*argv, "--overwrite"]) == 0
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(r.get("step") != 999 for r in rows)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
@pytest.mark.parametrize("argv", [["export", "--format", "coco", "--out"], ["stats", "--json"]])
def test_review_outputs_under_a_tree_that_takes_no_files(tmp_path, capsys, argv):
    from densevlm.review.importing import import_candidates

    data = make_dataset(tmp_path)
    import_candidates(data.db, data.candidates, None)
    before = data.db.read_bytes()
    assert main(["review", argv[0], "--db", str(data.db), *argv[1:], "/proc/x/out.json"]) == 2
    assert f"{argv[-1]} /proc/x/out.json: cannot write under /proc" in _one_error_line(capsys)
    assert data.db.read_bytes() == before


def test_an_existing_file_inside_an_input_folder_is_never_replaced(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    truth = data / "inspection.json"
    truth.write_text('{"images": []}')
    _refused("is an existing file in the input folder", truth, inputs=[data], overwrite=True)
    assert truth.read_text() == '{"images": []}'
    assert check_output(data / "op.json", inputs=[data]) == data / "op.json"  # a new file there is fine


def test_eval_never_writes_its_json_over_the_model_or_the_ground_truth(tmp_path, capsys):
    from densevlm.model import load_model

    world = _world(tmp_path)
    model = load_model("tiny-vit").save(tmp_path / "m.pt")
    capsys.readouterr()
    (world / "inspection.json").write_text("{}")
    for target in (model, world / "inspection.json"):
        before = Path(target).read_bytes()
        code = main(["eval", "--data", str(world), "--model", str(model), "--json", str(target), "--overwrite"])
        err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert code == 2 and len(err) == 1 and str(target) in err[0], err
        assert Path(target).read_bytes() == before


def test_an_interrupted_synth_is_named_and_overwrite_writes_it_again(tmp_path, capsys):
    out = tmp_path / "world"
    (out / "images").mkdir(parents=True)
    (out / "images" / "000000.png").write_bytes(b"half")  # what an interrupted synth leaves: no panoptic.json
    assert main(["synth", "--out", str(out), "--n", "2"]) == 2
    assert "holds an unfinished world (images but no panoptic.json: an interrupted synth?)" in capsys.readouterr().err
    assert main(["synth", "--out", str(out), "--n", "2", "--overwrite", "-q"]) == 0
    assert (out / "panoptic.json").is_file() and (out / "images" / "000000.png").read_bytes()[:4] == b"\x89PNG"


def test_retrieve_limit_below_one_is_refused(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    assert main(["retrieve", "--images", str(photos), "--limit", "0", "--out", str(tmp_path / "c.jsonl")]) == 2
    assert "--limit 0: give at least 1 image" in capsys.readouterr().err and not (tmp_path / "c.jsonl").exists()
