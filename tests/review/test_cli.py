"""`densevlm review ...` as a user runs it: help, one-line errors with exit status 2, init/export/stats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def densevlm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "densevlm", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_help_for_review_and_each_verb():
    top = densevlm("review", "--help")
    assert top.returncode == 0
    for verb in ("init", "serve", "export", "stats"):
        assert f"densevlm review {verb}" in top.stdout
    flags = {
        "init": ["--candidates", "--images", "--db"],
        "serve": ["--db", "--host", "--port", "--token"],
        "export": ["--db", "--format", "--out", "coco,labelstudio,jsonl"],
        "stats": ["--db", "--json"],
    }
    for verb, expected in flags.items():
        result = densevlm("review", verb, "--help")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"usage: densevlm review {verb}")
        for flag in expected:
            assert flag in result.stdout, (verb, flag)


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys\n"
        "from densevlm.cli.main import main\n"
        "try:\n    main(['review', 'serve', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'torch', 'pycocotools') if m in sys.modules), file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.stderr.strip() == "[]"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["review", "init", "--candidates", "nope.jsonl", "--db", "r.sqlite"], "nope.jsonl: candidates file not found"),
        (["review", "init", "--db", "r.sqlite"], "the following arguments are required: --candidates"),
        (["review", "serve", "--db", "missing.sqlite"], "missing.sqlite: review database not found"),
        (["review", "export", "--db", "missing.sqlite", "--format", "coco", "--out", "x.json"], "missing.sqlite: review database not found"),
        (["review", "export", "--db", "r.sqlite", "--format", "yolo", "--out", "x.json"], "invalid choice: 'yolo'"),
        (["review", "stats", "--db", "missing.sqlite"], "missing.sqlite: review database not found"),
        (["review", "stats"], "the following arguments are required: --db"),
        (["review", "serve", "--db", "r.sqlite", "--port", "99999"], "port 99999 is outside 0-65535"),
    ],
)
def test_bad_arguments_give_one_line(tmp_path, args, fragment):
    result = densevlm(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "missing.sqlite").exists()


def test_malformed_candidates_via_cli(dataset):
    text = dataset.candidates.read_text().splitlines()
    broken = json.loads(text[4])
    broken["box"] = [40, 8, 12, 30]
    text[4] = json.dumps(broken)
    dataset.candidates.write_text("\n".join(text) + "\n")
    result = densevlm("review", "init", "--candidates", str(dataset.candidates), "--db", str(dataset.db))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"densevlm review: error: {dataset.candidates}:5: box [40, 8, 12, 30] is inverted (x2 < x1)"
    ]
    assert not dataset.db.exists()


def test_init_export_stats(dataset, tmp_path):
    first = densevlm("review", "init", "--candidates", str(dataset.candidates), "--images", str(dataset.images), "--db", str(dataset.db))
    assert first.returncode == 0, first.stderr
    assert "added 8 regions (0 already there)" in first.stdout
    again = densevlm("review", "init", "--candidates", str(dataset.candidates), "--db", str(dataset.db))
    assert "added 0 regions (8 already there)" in again.stdout and "8 regions in total" in again.stdout

    from densevlm.review import session
    from densevlm.review.store import ReviewStore

    with ReviewStore(dataset.db) as store:
        region = session.next_region(store, "ann")
        session.add_verdict(store, region["id"], "ann", "category", region["candidates"][0]["category"])

    out = tmp_path / "exports" / "coco.json"
    exported = densevlm("review", "export", "--db", str(dataset.db), "--format", "coco", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert len(json.loads(out.read_text())["annotations"]) == 1
    ls = densevlm("review", "export", "--db", str(dataset.db), "--format", "labelstudio", "--out", str(tmp_path / "ls.json"))
    assert ls.returncode == 0 and '<RectangleLabels name="label" toName="image">' in ls.stdout

    stats_file = tmp_path / "stats.json"
    stats = densevlm("review", "stats", "--db", str(dataset.db), "--json", str(stats_file))
    assert stats.returncode == 0, stats.stderr
    assert "teacher top-1 agrees with the experts: 1 / 1 = 100.0 %" in stats.stdout
    written = json.loads(stats_file.read_text())
    assert written["status"]["accepted"] == 1 and written["regions"]["total"] == 8
