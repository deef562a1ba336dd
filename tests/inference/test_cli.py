"""``densevlm segment`` as a user runs it: bad files, any image mode and size, resume, boxes, errors."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import densevlm
from densevlm.cli.main import main
from densevlm.data.synth import default_vocabulary, generate_scene
from tests.conftest import perturb_
from tests.inference.helpers import check_segment_json, decode_rle

SRC = Path(__file__).resolve().parents[2] / "src"

# file -> (width, height) of the oriented image; None for the unreadable one
INPUTS = {
    "scene.png": (64, 64),
    "line2/scene.png": (64, 64),
    "gray.png": (50, 40),
    "rgba.png": (64, 48),
    "deep16.png": (48, 64),
    "rotated.jpg": (48, 64),
    "big.jpg": (6000, 4000),
    "corrupt.png": None,
}


def densevlm_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "DENSEVLM_CACHE": str(cwd / "cache"),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "densevlm", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


def _write_inputs(folder: Path) -> None:
    scene = generate_scene(seed=3, index=0, size=64).image
    (folder / "line2").mkdir(parents=True)
    Image.fromarray(scene).save(folder / "scene.png")
    Image.fromarray(generate_scene(seed=3, index=1, size=64).image).save(folder / "line2" / "scene.png")
    Image.fromarray(scene[:40, :50]).convert("L").save(folder / "gray.png")
    rgba = np.dstack([scene[:48], np.full((48, 64), 128, dtype=np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(folder / "rgba.png")
    deep = (np.asarray(Image.fromarray(scene[:, :48]).convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(deep).save(folder / "deep16.png")
    assert Image.open(folder / "deep16.png").mode == "I;16"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64 x 48, shown 48 x 64
    Image.fromarray(scene[:48]).save(folder / "rotated.jpg", exif=exif)
    Image.fromarray(scene).resize((6000, 4000), Image.NEAREST).save(folder / "big.jpg", quality=80)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("segment-cli")
    torch.manual_seed(0)
    model = densevlm.load_model("tiny-vit")
    perturb_(model.backbone.clip, seed=5)
    model.save(root / "tiny.pt")
    default_vocabulary().save(root / "vocab.txt")
    _write_inputs(root / "in")
    return root


@pytest.fixture(scope="module")
def first_run(run_dir):
    return densevlm_cli("segment", "in", "--model", "tiny.pt", "--vocab", "vocab.txt", "--out", "out",
                        "--workers", "1", "--batch-size", "3", cwd=run_dir)


def _summary(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.csv", newline="") as f:
        return {Path(row["file"]).relative_to("in").as_posix(): row for row in csv.DictReader(f)}


def _name(rel: str) -> str:
    return rel.replace("/", "__")


def _any_output(out: Path, name: str) -> bool:
    return any((out / f"{name}{suffix}").exists() for suffix in (".json", ".labels.png", ".overlay.png"))


def test_folder_with_bad_and_unusual_images_runs_to_the_end(run_dir, first_run):
    assert first_run.returncode == 0, first_run.stderr
    assert "Traceback" not in first_run.stderr
    warnings = [line for line in first_run.stderr.replace("\r", "\n").splitlines() if "corrupt.png" in line]
    assert len(warnings) == 1 and "not a readable image" in warnings[0]
    assert "segmented 7 images" in first_run.stdout and "1 failed, see summary.csv" in first_run.stdout
    assert "outputs: out" in first_run.stdout
    out = run_dir / "out"
    summary = _summary(out)
    assert set(summary) == set(INPUTS)
    assert summary["corrupt.png"]["status"] == "error" and "not a readable image" in summary["corrupt.png"]["reason"]
    assert not _any_output(out, "corrupt.png")
    vocab = default_vocabulary()
    for rel, size in INPUTS.items():
        if size is None:
            continue
        row = summary[rel]
        assert row["status"] == "ok", row
        labels = Image.open(out / f"{_name(rel)}.labels.png")
        assert labels.size == size and labels.mode == "L"
        overlay = Image.open(out / f"{_name(rel)}.overlay.png")
        assert overlay.height >= min(512, size[1]) and overlay.width > overlay.height * size[0] / size[1]
        doc = json.loads((out / f"{_name(rel)}.json").read_text())
        check_segment_json(doc, size[0], size[1], list(vocab.names))
        assert doc["file"] == str(Path("in") / rel) and doc["model"] == "tiny.pt" and doc["input_size"] == 64
        assert int(row["segments"]) == len(doc["segments"]) > 0
        assert row["top_classes"].split(":")[0] == doc["class_areas"][0]["category"]
        label_map = np.asarray(labels)
        for seg in doc["segments"][:5]:
            mask = decode_rle(seg["mask"])
            assert (label_map[mask] == seg["category_index"]).all()


@pytest.fixture
def in_process_main():
    """``main`` run in this process (faster than a subprocess); the logging it configures is undone."""
    logger = logging.getLogger("densevlm")
    saved = (logger.handlers[:], logger.level, logger.propagate, logging.getLogger().level)
    yield main
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
    logging.getLogger().setLevel(saved[3])


@pytest.fixture
def in_process(run_dir, monkeypatch, in_process_main):
    """``main`` in this process, working in the module's run folder."""
    monkeypatch.chdir(run_dir)
    monkeypatch.setenv("DENSEVLM_CACHE", str(run_dir / "cache"))
    return in_process_main


def test_second_run_skips_finished_images_and_overwrite_redoes_them(run_dir, first_run, in_process, capsys):
    assert first_run.returncode == 0, first_run.stderr
    out = run_dir / "out"
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "summary.csv"}
    args = ["segment", "in", "--model", "tiny.pt", "--vocab", "vocab.txt", "--out", "out"]
    assert in_process([*args, "--workers", "0"]) == 0, capsys.readouterr().err
    summary = _summary(out)
    assert {rel: row["status"] for rel, row in summary.items()} == {
        rel: "ok" if size else "error" for rel, size in INPUTS.items()  # a skipped image keeps its row
    }
    assert summary["big.jpg"]["segments"] != "0" and summary["big.jpg"]["top_classes"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "summary.csv"} == stamps
    assert "segmented 0 images (7 skipped with existing outputs, 1 failed, see summary.csv)" in capsys.readouterr().out
    assert in_process([*args, "--workers", "1", "--overwrite"]) == 0, capsys.readouterr().err
    assert [row["status"] for row in _summary(out).values()].count("ok") == 7
    changed = {p.name for p in out.iterdir() if p.name in stamps and p.stat().st_mtime_ns != stamps[p.name]}
    assert changed == set(stamps)


def test_a_run_on_other_images_keeps_the_summary_rows_of_the_earlier_ones(run_dir, in_process, capsys):
    args = ["--model", "tiny.pt", "--vocab", "vocab.txt", "--out", "out-two", "--workers", "0"]
    assert in_process(["segment", "in/scene.png", *args]) == 0, capsys.readouterr().err
    assert in_process(["segment", "in/gray.png", *args]) == 0, capsys.readouterr().err
    assert {rel: row["status"] for rel, row in _summary(run_dir / "out-two").items()} == {"scene.png": "ok",
                                                                                         "gray.png": "ok"}
    status = in_process(["segment", "in/line2", *args])  # another scene.png: not the one whose outputs are there
    assert status == 2 and "out-two: scene.png.json holds the outputs of in/scene.png, not of in/line2/scene.png" in (
        capsys.readouterr().err)
    (run_dir / "out-two" / "scene.png.json").unlink()  # its outputs gone: its row goes too
    assert in_process(["segment", "in/gray.png", *args]) == 0, capsys.readouterr().err
    assert list(_summary(run_dir / "out-two")) == ["gray.png"]


@pytest.mark.parametrize("boxes, expected", [
    ({"images": [{"id": 1, "file_name": "rgba.png"}],
      "annotations": [{"image_id": 1, "bbox": [0, 0, 10, 10]}, {"image_id": 1, "bbox": [30, 10, 0, 5]}]},
     "annotations[1] (image rgba.png): box [30, 10, 0, 5] (x, y, width, height) is inverted"),
    ([{"image": "rgba.png", "box": [0, 0, 65.5, 10]}], "entry [0] (image rgba.png): box [0, 0, 65.5, 10] is outside the 64x48 image"),
    ([{"image": "line2/scene.png", "box": [10, 70, 20, 80]}], "entry [0] (image line2/scene.png): box [10, 70, 20, 80] is outside the 64x64 image"),
])
def test_bad_boxes_stop_with_one_line_error(run_dir, in_process, capsys, boxes, expected):
    (run_dir / "bad.json").write_text(json.dumps(boxes))
    status = in_process(["segment", "in", "--model", "tiny.pt", "--boxes", "bad.json", "--out", "out-bad", "--workers", "0"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("densevlm segment: error: bad.json: ") and expected in err
    assert not (run_dir / "out-bad").exists()


def test_bad_boxes_error_is_one_line_from_the_command_line(run_dir):
    (run_dir / "inverted.json").write_text(json.dumps([{"image": "gray.png", "box": [40, 0, 10, 10]}]))
    result = densevlm_cli("segment", "in", "--boxes", "inverted.json", "--out", "out-inverted", cwd=run_dir)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "inverted.json: entry [0] (image gray.png)" in result.stderr
    assert "inverted" in result.stderr


def test_valid_boxes_give_one_segment_per_box(run_dir, in_process, capsys):
    boxes = [
        {"image": "scene.png", "box": [0, 0, 32, 32]},
        {"image": "scene.png", "box": [10.5, 20, 64, 64]},
        {"image": "rotated.jpg", "box": [0, 0, 48, 64]},
        {"image": "big.jpg", "box": [1000, 500, 5000, 3900]},
    ]
    (run_dir / "boxes.json").write_text(json.dumps(boxes))
    status = in_process(["segment", "in/scene.png", "in/rotated.jpg", "in/big.jpg", "in/gray.png", "--model", "tiny.pt",
                         "--vocab", "vocab.txt", "--boxes", "boxes.json", "--out", "out-boxes", "--workers", "0"])
    assert status == 0, capsys.readouterr().err
    out = run_dir / "out-boxes"
    vocab = default_vocabulary()
    expected = {"scene.png": boxes[:2], "rotated.jpg": boxes[2:3], "big.jpg": boxes[3:], "gray.png": []}
    for name, given in expected.items():
        doc = json.loads((out / f"{name}.json").read_text())
        check_segment_json(doc, doc["width"], doc["height"], list(vocab.names))
        assert doc["mode"] == "boxes"
        assert [s["bbox"] for s in doc["segments"]] == [b["box"] for b in given]
        assert all(s["source"] == "box" and s["topk"][0]["category"] == s["category"] for s in doc["segments"])
    big = json.loads((out / "big.jpg.json").read_text())["segments"][0]
    assert big["area"] == 4000 * 3400


def test_the_demo_model_is_the_default_when_present(run_dir, tmp_path, monkeypatch, in_process_main, capsys):
    monkeypatch.chdir(tmp_path)
    demo = tmp_path / "densevlm-demo" / "densevlm"
    demo.mkdir(parents=True)
    (demo / "last.pt").write_bytes((run_dir / "tiny.pt").read_bytes())
    status = in_process_main(["segment", str(run_dir / "in" / "gray.png"), "--out", "out", "--workers", "0"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "using the model tuned by `densevlm demo`: densevlm-demo/densevlm/last.pt" in captured.err
    doc = json.loads((tmp_path / "out" / "gray.png.json").read_text())
    assert doc["model"] == "densevlm-demo/densevlm/last.pt"
    assert doc["vocabulary"]["names"] == list(default_vocabulary().names)


def test_onnx_engine_needs_a_model_file(run_dir, in_process, capsys):
    status = in_process(["segment", "in", "--engine", "onnx", "--out", "out-onnx"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "--engine onnx needs --model EXPORT_DIR" in err


def test_help_describes_the_outputs_without_importing_torch():
    code = (
        "import sys\n"
        "from densevlm.cli.main import main\n"
        "try:\n    main(['segment', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'pycocotools', 'scipy') if m in sys.modules), file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.stderr.strip() == "[]"
    for flag in ("--vocab", "--model", "--pretrained", "--out", "--size", "--top-k", "--boxes", "--engine", "--overwrite",
                 "--workers", "--batch-size", "--min-area", "NAME.labels.png", "summary.csv", "topk"):
        assert flag in result.stdout, flag
