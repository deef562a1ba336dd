"""`densevlm retrieve` writes candidates the review page can import."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from densevlm.data.synth import write_world
from densevlm.errors import DenseVLMError
from densevlm.fileio import open_exclusive
from densevlm.model import load_model
from densevlm.review.importing import import_candidates


def test_retrieve_writes_importable_candidates(tmp_path):
    world = write_world(tmp_path / "world", 3, seed=12, progress=False)
    teacher = load_model("tiny-vit").save(tmp_path / "teacher.pt")
    out = tmp_path / "cand.jsonl"
    proc = subprocess.run([sys.executable, "-m", "densevlm", "retrieve", "--teacher", str(teacher), "--images", str(world),
                           "--out", str(out), "--max-boxes", "5", "--tau", "100", "-q"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "kept" in proc.stdout and str(out) in proc.stdout.splitlines()[-1]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    header, regions = lines[0], lines[1:]
    assert header["kind"] == "header" and len(header["vocabulary"]["things"]) == 10
    assert header["tau"] == 100.0 and "logit scale 100.0" in proc.stdout  # --tau still sets the logit scale
    assert len(regions) == 15
    for r in regions:
        x1, y1, x2, y2 = r["box"]
        assert 0 <= x1 < x2 <= r["width"] and 0 <= y1 < y2 <= r["height"]
        probs = [c["prob"] for c in r["candidates"]]
        assert probs == sorted(probs, reverse=True) and len(probs) == 5
        assert r["confidence"] == probs[0] and len(r["logits"]) == 16
        assert r["thing"] == r["candidates"][0]["thing"]
    summary = import_candidates(tmp_path / "review.sqlite", out)
    assert summary.regions_added == 15


@pytest.mark.parametrize("flag", ["--logit-scale", "--tau"])
def test_logit_scale_flag_and_its_old_name(flag):
    from densevlm.cli.retrieve import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--images", "x", "--out", "y", flag, "42.5"])
    assert args.logit_scale == 42.5
    assert parser.parse_args(["--images", "x", "--out", "y"]).logit_scale is None


def test_segments_carry_masks(tmp_path):
    from densevlm.data.images import open_image_source
    from densevlm.data.synth import default_vocabulary
    from densevlm.retrieval.candidates import write_candidates
    from densevlm.retrieval.teacher import RetrievalConfig
    from pycocotools import mask as mask_utils

    world = write_world(tmp_path / "world", 2, seed=13, progress=False)
    out = tmp_path / "seg.jsonl"
    write_candidates(load_model("tiny-vit"), open_image_source(world), default_vocabulary(), out, RetrievalConfig(),
                     region_source="segments", progress=False)
    regions = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    assert regions
    for r in regions:
        m = mask_utils.decode({"size": r["mask"]["size"], "counts": r["mask"]["counts"].encode()})
        ys, xs = m.nonzero()
        assert m.shape == (64, 64) and m.sum() > 0
        x1, y1, x2, y2 = r["box"]
        assert x1 <= xs.min() and xs.max() < x2 + 1e-6 and y1 <= ys.min() and ys.max() < y2 + 1e-6


def test_images_too_thin_are_skipped(tmp_path, caplog):
    import densevlm.retrieval.candidates as candidates
    from PIL import Image

    from densevlm.data.images import open_image_source
    from densevlm.data.synth import default_vocabulary
    from densevlm.retrieval.teacher import RetrievalConfig

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(folder / "a.png")
    Image.new("RGB", (3840, 64)).save(folder / "strip.png")
    teacher, vocab, out = load_model("tiny-vit"), default_vocabulary(), tmp_path / "cand.jsonl"
    summary = candidates.write_candidates(teacher, open_image_source(str(folder)), vocab, out, RetrievalConfig(),
                                          region_source="segments", progress=False)
    assert (summary["images"], summary["skipped"]) == (1, 1) and "strip.png: image is 3840x64 px" in caplog.text


def _interrupt_after(monkeypatch, calls: int) -> None:
    """Make the teacher's region features raise KeyboardInterrupt on call number ``calls + 1``."""
    import densevlm.retrieval.candidates as candidates

    real, seen = candidates.teacher_region_features, []

    def interrupted(*args, **kwargs):
        if len(seen) == calls:
            raise KeyboardInterrupt
        seen.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(candidates, "teacher_region_features", interrupted)


def test_an_interrupted_run_resumes_to_the_file_of_an_uninterrupted_one(tmp_path, monkeypatch):
    from PIL import Image

    from densevlm.data.images import open_image_source
    from densevlm.data.synth import default_vocabulary
    from densevlm.retrieval.candidates import partial_path, write_candidates
    from densevlm.retrieval.teacher import RetrievalConfig

    world = write_world(tmp_path / "world", 5, seed=14, progress=False)
    (world / "images" / "000001b.png").write_bytes(b"not an image")  # skipped before the interrupt, and counted
    Image.new("RGB", (3840, 64)).save(world / "images" / "000004b.png")  # skipped after it
    teacher, vocab, cfg = load_model("tiny-vit"), default_vocabulary(), RetrievalConfig()
    source = open_image_source(str(world))
    whole = write_candidates(teacher, source, vocab, tmp_path / "whole.jsonl", cfg, max_boxes=4, seed=3,
                             progress=False)
    out = tmp_path / "cand.jsonl"
    out.write_text("an earlier result")
    _interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        write_candidates(teacher, source, vocab, out, cfg, max_boxes=4, seed=3, progress=False)
    partial = partial_path(out)
    assert out.read_text() == "an earlier result" and partial.name == "cand.jsonl.partial"
    with open(partial, "ab") as f:
        f.write(b'{"kind": "region", "id": "000003.png#0", "im')  # a line cut off by a power cut
    monkeypatch.undo()
    with pytest.raises(DenseVLMError, match=r"cand.jsonl.partial: the interrupted run had other --seed \(3 then, 4 now"):
        write_candidates(teacher, source, vocab, out, cfg, max_boxes=4, seed=4, progress=False, resume=True)
    with pytest.raises(DenseVLMError, match=r"other --teacher; resume"):  # not its logit scale too
        write_candidates(load_model("tiny-student"), source, vocab, out, cfg, max_boxes=4, seed=3, progress=False,
                         resume=True)
    with pytest.raises(DenseVLMError, match=r"other --limit \(not given then, 2 now\)"):
        write_candidates(teacher, source, vocab, out, cfg, max_boxes=4, seed=3, progress=False, resume=True, limit=2)
    added = world / "images" / "000000a.png"  # an image added before the resume would shift the grids
    added.write_bytes((world / "images" / "000000.png").read_bytes())
    with pytest.raises(DenseVLMError, match=r"other image files \(some were added to or removed from --images"):
        write_candidates(teacher, open_image_source(str(world)), vocab, out, cfg, max_boxes=4, seed=3, progress=False,
                         resume=True)
    added.unlink()
    with open_exclusive(partial, "retrieve"), pytest.raises(DenseVLMError, match="another retrieve is writing it now"):
        write_candidates(teacher, source, vocab, out, cfg, max_boxes=4, seed=3, progress=False, resume=True)
    resumed = write_candidates(teacher, source, vocab, out, cfg, max_boxes=4, seed=3, progress=False, resume=True)
    assert out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes() and not partial.exists()
    drop = ("wall_s", "out")
    assert {k: v for k, v in resumed.items() if k not in drop} == {k: v for k, v in whole.items() if k not in drop}
    assert (whole["images"], whole["skipped"]) == (5, 2)
    partial.write_bytes(b'{"kind": "header", "teacher"')  # stopped while writing its header: starts again
    write_candidates(teacher, source, vocab, out, cfg, max_boxes=4, seed=3, progress=False, resume=True)
    assert out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes() and not partial.exists()


def test_a_folder_without_one_readable_image_is_an_error(tmp_path):
    from densevlm.data.images import open_image_source
    from densevlm.data.synth import default_vocabulary
    from densevlm.retrieval.candidates import write_candidates
    from densevlm.retrieval.teacher import RetrievalConfig

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not an image")
    out = tmp_path / "new" / "cand.jsonl"
    with pytest.raises(DenseVLMError, match=r"none of the 1 images could be labelled .*; nothing written to"):
        write_candidates(load_model("tiny-vit"), open_image_source(str(folder)), default_vocabulary(), out,
                         RetrievalConfig(), progress=False)
    assert sorted(p.name for p in out.parent.iterdir()) == []


def test_the_command_refuses_to_start_over_an_interrupted_run(tmp_path):
    world = write_world(tmp_path / "world", 2, seed=15, progress=False)
    out = tmp_path / "cand.jsonl"
    (tmp_path / "cand.jsonl.partial").write_text("{}\n")
    command = [sys.executable, "-m", "densevlm", "retrieve", "--teacher", "tiny-vit", "--images", str(world),
               "--out", str(out), "-q"]
    proc = subprocess.run(command, capture_output=True, text=True)
    assert proc.returncode == 2 and "cand.jsonl.partial: holds an interrupted retrieve; --resume" in proc.stderr
    proc = subprocess.run(command + ["--resume"], capture_output=True, text=True)
    assert proc.returncode == 2 and "not a candidates file of densevlm retrieve" in proc.stderr, proc.stderr
    proc = subprocess.run(command + ["--overwrite"], capture_output=True, text=True)
    assert proc.returncode == 0 and out.is_file() and not (tmp_path / "cand.jsonl.partial").exists(), proc.stderr
    proc = subprocess.run(command + ["--resume"], capture_output=True, text=True)
    assert proc.returncode == 2 and "cand.jsonl.partial: no interrupted retrieve to resume" in proc.stderr


def test_boxes_are_the_regions_and_only_their_images_are_labelled(tmp_path, capsys):
    from densevlm.cli.main import main

    world = write_world(tmp_path / "world", 8, seed=14, progress=False)
    truth = json.loads((world / "panoptic.json").read_text())
    names = {c["id"]: c["name"] for c in truth["categories"]}
    things = {c["id"] for c in truth["categories"] if c["isthing"]}
    given = []
    for ann in truth["annotations"][::2]:  # every other image
        for s in ann["segments_info"]:
            if s["category_id"] in things:
                x, y, w, h = s["bbox"]
                given.append({"image": ann["file_name"], "box": [x, y, x + w, y + h], "truth": names[s["category_id"]]})
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(given))
    out = tmp_path / "cand.jsonl"
    # at 128 px the teacher's input is twice the image: the boxes go through the letterbox both ways
    argv = ["retrieve", "--images", str(world), "--boxes", str(boxes), "--size", "128", "--out", str(out), "-q"]
    assert main(argv) == 0
    header, *regions = [json.loads(line) for line in out.read_text().splitlines()]
    assert header["region_source"] == "boxes" and "4 images" in capsys.readouterr().out
    assert [(r["image"], r["box"]) for r in regions] == [(g["image"], [float(v) for v in g["box"]]) for g in given]
    named = sum(r["candidates"][0]["category"] == g["truth"] for r, g in zip(regions, given))
    assert named >= 0.6 * len(given), (named, len(given))  # the teacher names the parts in their boxes
    assert [r["id"] for r in regions] == [f"{g['image']}#box" + ",".join(f"{v:g}" for v in g["box"]) for g in given]
    # grid candidates of the same images first: the boxes are added beside them, not taken for them
    grid = tmp_path / "grid.jsonl"
    assert main(["retrieve", "--images", str(world), "--max-boxes", "2", "--out", str(grid), "-q"]) == 0
    import_candidates(tmp_path / "review.sqlite", grid)
    assert import_candidates(tmp_path / "review.sqlite", out).regions_added == len(given)
    moved = [{**given[0], "box": [given[0]["box"][0] + 1, *given[0]["box"][1:]]}, given[1]]
    (tmp_path / "more.json").write_text(json.dumps(moved))
    more = tmp_path / "more.jsonl"
    assert main(["retrieve", "--images", str(world), "--boxes", str(tmp_path / "more.json"), "--size", "128",
                 "--out", str(more), "-q"]) == 0
    summary = import_candidates(tmp_path / "review.sqlite", more)  # a second file: its new box joins the first's
    assert (summary.regions_added, summary.regions_present, summary.regions_differing) == (1, 1, 0)
    for extra, message in ((["--regions", "segments"], "--boxes replaces --regions and --max-boxes"),
                           (["--regions", "grid"], "--boxes replaces --regions and --max-boxes"),
                           (["--max-boxes", "3"], "--boxes replaces --regions and --max-boxes")):
        assert main(argv + ["--overwrite"] + extra) == 2
        assert message in capsys.readouterr().err
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps([{"image": given[0]["image"], "box": [0, 0, 66, 10]}]))
    assert main(["retrieve", "--images", str(world), "--boxes", str(outside), "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(outside) in err[0] and "Traceback" not in err[0]
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps([{"image": "nowhere.png", "box": [0, 0, 5, 5]}]))
    assert main(["retrieve", "--images", str(world), "--boxes", str(elsewhere), "--out", str(tmp_path / "e.jsonl")]) == 2
    assert "no box names an image of" in capsys.readouterr().err
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    assert main(["retrieve", "--images", str(world), "--boxes", str(empty), "--out", str(tmp_path / "n.jsonl")]) == 2
    assert f"{empty}: holds no boxes" in capsys.readouterr().err
