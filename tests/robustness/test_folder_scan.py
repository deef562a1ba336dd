"""Kind: a folder scan reads densevlm's own outputs, or leaves files out without a word.

`segment DIR --out DIR` run twice segmented its own overlays and label maps, and a folder
holding an animated GIF silently left it out. Now a scan never yields segment outputs (beside
their NAME.json or a summary.csv, wherever --out was), reads GIFs (an animated one by its
first frame) and logs one line of what it skipped and why.
"""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
from PIL import Image

from densevlm.cli.main import main
from densevlm.data.images import find_images, is_densevlm_output, open_image_source
from densevlm.imaging import open_image


def _frames(path, colours) -> None:
    frames = [Image.new("RGB", (24, 16), c) for c in colours]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


@pytest.fixture
def folder(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(photos / "a.png")
    _frames(photos / "anim.gif", [(250, 0, 0), (0, 250, 0), (0, 0, 250)])
    _frames(photos / "still.gif", [(10, 200, 30)])
    (photos / "notes.txt").write_text("not an image\n")
    (photos / "scan.heic").write_bytes(b"\x00")
    return photos


def test_animated_and_still_gifs_are_read_by_their_first_frame(folder):
    root, files = find_images(folder)
    assert [f.name for f in files] == ["a.png", "anim.gif", "still.gif"]
    assert open_image(folder / "anim.gif").getpixel((3, 3)) == (250, 0, 0)
    assert open_image(folder / "still.gif").getpixel((3, 3)) == (10, 200, 30)


def test_a_scan_says_in_one_line_what_it_skipped_and_why(folder, caplog):
    Image.new("RGB", (4, 4)).save(folder / "a.png.overlay.png")
    Image.new("L", (4, 4)).save(folder / "a.png.labels.png")
    (folder / "a.png.json").write_text("{}")
    with caplog.at_level(logging.INFO, logger="densevlm"):
        root, files = find_images(folder)
    assert [f.name for f in files] == ["a.png", "anim.gif", "still.gif"]
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{folder}: skipped 5 files: ")
    assert "3 densevlm outputs (a.png.json, a.png.labels.png, a.png.overlay.png)" in lines[0]
    assert "2 not an image type densevlm reads (notes.txt, scan.heic)" in lines[0]


def test_outputs_are_recognised_wherever_out_was(tmp_path):
    elsewhere = tmp_path / "seg"
    elsewhere.mkdir()
    for name in ("x.png.overlay.png", "x.png.labels.png"):
        Image.new("RGB", (4, 4)).save(elsewhere / name)
    assert not is_densevlm_output(elsewhere / "x.png.overlay.png")  # no JSON, no summary: a user's file
    (elsewhere / "summary.csv").write_text("file,name,status\n")
    assert is_densevlm_output(elsewhere / "x.png.overlay.png") and is_densevlm_output(elsewhere / "x.png.labels.png")
    with pytest.raises(Exception, match="no images found"):
        open_image_source(elsewhere)


def test_overlays_of_an_earlier_inspect_are_not_inputs(tmp_path):
    line = tmp_path / "line"
    (line / "verdicts" / "overlays").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(line / "001.png")
    overlay = line / "verdicts" / "overlays" / "001.png.overlay.png"
    Image.new("RGB", (8, 8)).save(overlay)
    assert not is_densevlm_output(overlay)  # no verdicts.csv beside overlays/: a user's file
    (line / "verdicts" / "verdicts.csv").write_text("image,verdict,score,defects,reason,overlay\n")
    assert is_densevlm_output(overlay)
    assert [f.name for f in find_images(line)[1]] == ["001.png"]


def test_segment_into_its_own_input_folder_twice_reads_only_the_photos(folder, capsys):
    args = ["segment", str(folder), "--out", str(folder), "--model", "tiny-student", "--workers", "0"]
    inputs = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert main(args) == 0
    first = sorted(p.name for p in folder.iterdir())
    assert main(args) == 0
    assert sorted(p.name for p in folder.iterdir()) == first  # nothing segmented its own outputs
    with open(folder / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["name"], r["status"]) for r in rows] == [("a.png", "ok"), ("anim.gif", "ok"), ("still.gif", "ok")]
    assert {name: (folder / name).read_bytes() for name in inputs} == inputs
    err = capsys.readouterr().err
    assert "10 densevlm outputs" in err and "2 not an image type densevlm reads (notes.txt, scan.heic)" in err
