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
    code = main(["eval", "--data", str(world), "--model", "no-such-model", "--json", str(out)])
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


@pytest.mark.parametrize("verb", ["export", "stats"])
def test_review_outputs_never_replace_the_database(tmp_path, capsys, verb):
    from densevlm.review.importing import import_candidates

    data = make_dataset(tmp_path)
    import_candidates(data.db, data.candidates, None)
    before = data.db.read_bytes()
    flag = ["--format", "jsonl", "--out"] if verb == "export" else ["--json"]
    assert main(["review", verb, "--db", str(data.db), *flag, str(data.db)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "is also an input of this command" in errors[0] and str(data.db) in errors[0]
    assert data.db.read_bytes() == before
