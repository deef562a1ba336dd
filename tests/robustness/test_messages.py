"""Kind: a message that does not say what was expected.

`export --check FILE` said "export directory not found" for a file that exists; `retrieve
--images FILE` called a file that exists an image folder that is not found; a fixed-size ONNX
export used at another --size gave a re-export line per image and a summary calling every image
"unreadable". Each is now one line saying what the option takes, before any work.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from densevlm.cli.main import main


def _one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_export_check_given_a_file_says_a_directory_was_expected(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    given = tmp_path / "image_encoder.onnx"
    given.write_bytes(b"not an export")
    assert main(["export", "--check", str(given)]) == 2
    line = _one_error_line(capsys)
    assert f"{given}: is a file; expected an export directory" in line and "densevlm_export.json" in line
    assert "not found" not in line and given.read_bytes() == b"not an export"


@pytest.mark.parametrize("name", ["notes.txt", "vocab"])
def test_images_given_a_file_that_is_no_image_says_what_it_takes(tmp_path, capsys, name):
    given = tmp_path / name
    given.write_text("bolt\n")
    out = tmp_path / "c.jsonl"
    assert main(["retrieve", "--images", str(given), "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert f"{given}: not an image file" in line and "--images takes a folder, an image file" in line
    assert "not found" not in line and not out.exists()


def test_segment_given_a_file_that_is_no_image_says_what_it_takes(tmp_path, capsys):
    given = tmp_path / "notes.txt"
    given.write_text("x\n")
    assert main(["segment", str(given), "--out", str(tmp_path / "seg")]) == 2
    assert f"{given}: not an image file; expected a folder, a glob or an image file" in _one_error_line(capsys)


def test_a_fixed_size_onnx_export_at_another_size_fails_once_before_any_image(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    export = tmp_path / "export"
    assert main(["export", "--model", "tiny-student", "--out", str(export), "--skip-parity", "--no-regions",
                 "--threads", "1", "-q"]) == 0
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (32, 24), (40 * i, 90, 10)).save(photos / f"{i}.png")
    capsys.readouterr()
    out = tmp_path / "seg"
    assert main(["segment", str(photos), "--engine", "onnx", "--model", str(export), "--size", "128",
                 "--out", str(out), "--workers", "0", "-q"]) == 2
    line = _one_error_line(capsys)
    assert f"{export} was exported for 64x64 inputs, not size 128; re-export with --dynamic or --size" in line
    assert line.startswith("densevlm segment: error: ") and not (out / "summary.csv").exists()
