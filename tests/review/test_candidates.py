"""Malformed candidates JSONL files give one-line errors naming the file and the line."""

from __future__ import annotations

import json

import pytest

from densevlm.errors import DenseVLMError
from densevlm.review.candidates import read_candidates
from densevlm.review.importing import import_candidates

from .conftest import VOCAB, header, region


def good_region(**changes) -> dict:
    base = region("a.png#0", "a.png", (64, 64), [12.0, 8.0, 40.5, 30.0], [("bolt", 0.81), ("conveyor belt", 0.12)])
    base.update(changes)
    return base


def without(key: str) -> dict:
    r = good_region()
    del r[key]
    return r


# (third line of the file, expected message fragment); line 2 is always a good region
CASES = {
    "bad json": ('{"kind": "region", "id": ', "not valid JSON"),
    "not an object": ("[1, 2, 3]", "must be a JSON object"),
    "wrong kind": (json.dumps(good_region(kind="header")), 'expected "kind": "region"'),
    "missing box": (json.dumps(without("box")), "missing key 'box'"),
    "missing candidates": (json.dumps(without("candidates")), "missing key 'candidates'"),
    "box not a list": (json.dumps(good_region(box="12,8,40,30")), "'box' must be [x1, y1, x2, y2]"),
    "box of 3": (json.dumps(good_region(box=[1, 2, 3])), "'box' must be [x1, y1, x2, y2]"),
    "box with a string": (json.dumps(good_region(box=[1, 2, "3", 4])), "'box' must be [x1, y1, x2, y2]"),
    "inverted x": (json.dumps(good_region(box=[40, 8, 12, 30])), "box [40, 8, 12, 30] is inverted (x2 < x1)"),
    "inverted y": (json.dumps(good_region(box=[10, 30, 12, 8])), "is inverted (y2 < y1)"),
    "box outside": (json.dumps(good_region(box=[10, 8, 70, 30])), "lies outside the 64x64 image"),
    "negative box": (json.dumps(good_region(box=[-1, 8, 10, 30])), "lies outside the 64x64 image"),
    "width as string": (json.dumps(good_region(width="64")), "'width' and 'height' must be positive integers"),
    "unknown category": (
        json.dumps(good_region(candidates=[{"category": "bolts", "prob": 0.5, "thing": True}])),
        "unknown category 'bolts' (not in the header vocabulary; did you mean bolt?)",
    ),
    "prob above one": (
        json.dumps(good_region(candidates=[{"category": "bolt", "prob": 1.5, "thing": True}])),
        "prob 1.5",
    ),
    "candidates unsorted": (
        json.dumps(good_region(candidates=[{"category": "bolt", "prob": 0.1}, {"category": "nut", "prob": 0.5}])),
        "not sorted by prob",
    ),
    "thing flag contradicts header": (
        json.dumps(good_region(candidates=[{"category": "steel plate", "prob": 0.5, "thing": True}])),
        "lists it under stuff",
    ),
    "empty candidates": (json.dumps(good_region(candidates=[])), "'candidates' must be a non-empty list"),
    "confidence as string": (json.dumps(good_region(confidence="high")), "'confidence' must be a number in [0, 1]"),
    "kept not bool": (json.dumps(good_region(kept=1)), "'kept' must be true or false"),
    "duplicate id": (json.dumps(good_region(id="first")), "duplicate region id 'first' (first on line 2)"),
    "absolute image": (json.dumps(good_region(image="/etc/passwd")), "must be a path inside the images directory"),
    "image escapes": (json.dumps(good_region(image="../a.png")), "must be a path inside the images directory"),
    "mask not rle": (json.dumps(good_region(mask=[[1, 2, 3, 4]])), "'mask' must be null or a COCO RLE object"),
    "mask wrong size": (json.dumps(good_region(mask={"size": [32, 32], "counts": "0"})), "does not match the image size"),
    "mask counts short": (
        json.dumps(good_region(mask={"size": [64, 64], "counts": "05"})),
        "do not decode to 64x64 pixels",
    ),
    "mask counts as list": (
        json.dumps(good_region(mask={"size": [64, 64], "counts": [4096]})),
        "compressed RLE string",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_line_names_file_and_line(dataset, case):
    third, fragment = CASES[case]
    path = dataset.root / "bad.jsonl"
    lines = [json.dumps(header(dataset.images)), json.dumps(good_region(id="first")), third]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DenseVLMError) as err:
        import_candidates(dataset.db, path)
    message = str(err.value)
    assert message.startswith(f"{path}:3: ")
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "first_line, fragment",
    [
        ('{"kind": "region"}', "the first line must be the header"),
        (json.dumps({**header("/x"), "version": 2}), "unsupported candidates version 2"),
        (json.dumps({k: v for k, v in header("/x").items() if k != "vocabulary"}), "missing key 'vocabulary'"),
        (json.dumps({**header("/x"), "vocabulary": {"things": [["bolt"], ["Bolt"]], "stuff": []}}), "appears twice"),
        (json.dumps({**header("/x"), "vocabulary": {"things": [], "stuff": []}}), "vocabulary is empty"),
        (json.dumps({**header("/x"), "vocabulary": {**VOCAB, "defects": "bolt"}}), "'defects' must be a list"),
        (json.dumps({**header("/x"), "vocabulary": {**VOCAB, "defects": ["belt"]}}), "defect 'belt' is not a thing"),
    ],
)
def test_malformed_header(tmp_path, first_line, fragment):
    path = tmp_path / "c.jsonl"
    path.write_text(first_line + "\n", encoding="utf-8")
    with pytest.raises(DenseVLMError) as err:
        read_candidates(path)
    assert str(err.value).startswith(f"{path}:1: ")
    assert fragment in str(err.value)


def test_image_size_must_match_file(dataset):
    path = dataset.root / "size.jsonl"
    wrong = region("c.png#0", "c.png", (64, 64), [1.0, 1.0, 5.0, 5.0], [("bolt", 0.5)])
    path.write_text(json.dumps(header(dataset.images)) + "\n\n" + json.dumps(wrong) + "\n", encoding="utf-8")
    with pytest.raises(DenseVLMError, match=r"size\.jsonl:3: width x height 64x64 does not match image 'c.png' \(48x32\)"):
        import_candidates(dataset.db, path)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(DenseVLMError, match="candidates file is empty"):
        read_candidates(empty)
    with pytest.raises(DenseVLMError, match="candidates file not found"):
        read_candidates(tmp_path / "nope.jsonl")
    with pytest.raises(DenseVLMError, match=r"cand.jsonl.partial: the unfinished file of an interrupted `densevlm "
                                            r"retrieve`; finish it .* then use cand.jsonl"):
        read_candidates(tmp_path / "cand.jsonl.partial")
    (tmp_path / "r.JSONL.PARTIAL").write_text("{}\n")
    (tmp_path / "r.jsonl").symlink_to(tmp_path / "r.JSONL.PARTIAL")
    with pytest.raises(DenseVLMError, match=r"r.jsonl: the unfinished file of an interrupted"):
        read_candidates(tmp_path / "r.jsonl")
