"""`densevlm retrieve` writes candidates the review page can import."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from densevlm.data.synth import write_world
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
