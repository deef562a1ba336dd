"""Kind: a reader of user files never raises anything but DenseVLMError (property-based).

The vocabulary parser, the candidates reader and the panoptic reader are fed arbitrary text and
valid files whose values were swapped for arbitrary JSON; each either returns a result or
raises a one-line DenseVLMError naming the file.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from densevlm.data.panoptic import PanopticDataset
from densevlm.errors import DenseVLMError
from densevlm.review.candidates import read_candidates
from densevlm.vocab import parse_vocabulary
from tests.review.conftest import header, region

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _one_line_error(error: DenseVLMError, source: str) -> None:
    message = str(error)
    assert message and "\n" not in message
    assert source in message


def _mutated(value, data, depth: int = 0):
    """``value`` with some leaves or keys swapped for arbitrary JSON, drawn by ``data``."""
    if depth > 0 and data.draw(st.integers(0, 5)) == 0:
        return data.draw(JSON_VALUES)
    if isinstance(value, dict):
        out = {k: _mutated(v, data, depth + 1) for k, v in value.items() if data.draw(st.integers(0, 9)) > 0}
        if data.draw(st.integers(0, 6)) == 0:
            out[data.draw(st.text(max_size=8))] = data.draw(JSON_VALUES)
        return out
    if isinstance(value, list):
        return [_mutated(v, data, depth + 1) for v in value]
    return value


# ---------------------------------------------------------------- vocabulary

VOCAB_PIECES = st.sampled_from(["[things]", "[stuff]", "[thing]", "[", "]", ",", "#", " ", "\t", "\n", "\r\n",
                                "bolt", "Bolt", "nut", "ß", "\u00a0", "\ufeff", "\x00", "\u2028"])


@SETTINGS
@given(st.text() | st.lists(VOCAB_PIECES | st.text(max_size=5), max_size=30).map("".join))
def test_the_vocabulary_parser_never_raises_anything_else(text):
    try:
        vocab = parse_vocabulary(text, source="plant.txt")
    except DenseVLMError as e:
        _one_line_error(e, "plant.txt")
        return
    assert len(vocab.names) == len(vocab.lines) > 0
    assert parse_vocabulary(vocab.to_text(), "again.txt") == vocab


# ---------------------------------------------------------------- candidates

def _candidates_lines() -> list[dict]:
    return [header("images"), region("a.png#0", "a.png", (64, 48), [4.0, 4.0, 30.0, 20.0], [("bolt", 0.8), ("nut", 0.1)])]


@SETTINGS
@given(st.data())
def test_the_candidates_reader_never_raises_anything_else(data):
    choice = data.draw(st.integers(0, 2))
    if choice == 0:
        text = data.draw(st.text())
    elif choice == 1:
        text = "".join(json.dumps(_mutated(line, data)) + "\n" for line in _candidates_lines())
    else:
        lines = [json.dumps(line) for line in _candidates_lines()]
        lines.insert(data.draw(st.integers(0, 2)), data.draw(st.text(max_size=40) | JSON_VALUES.map(json.dumps)))
        text = "\n".join(lines)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "candidates.jsonl"
        path.write_bytes(text.encode("utf-8", errors="replace"))
        try:
            read_candidates(path)
        except DenseVLMError as e:
            _one_line_error(e, str(path))


NASTY_JSON = ("[" * 100_000 + "]" * 100_000, "1" * 5000, '{"kind": "header", "version": ' + "9" * 5000 + "}")


def test_deep_nesting_and_huge_numbers_are_one_line(tmp_path):
    for text in NASTY_JSON:
        path = tmp_path / "candidates.jsonl"
        path.write_text(text)
        try:
            read_candidates(path)
        except DenseVLMError as e:
            _one_line_error(e, str(path))
        root = tmp_path / "world"
        root.mkdir(exist_ok=True)
        (root / "panoptic.json").write_text(text)
        try:
            PanopticDataset(root)
        except DenseVLMError as e:
            _one_line_error(e, str(root))


# ---------------------------------------------------------------- panoptic

def _panoptic_world(root: Path) -> dict:
    (root / "images").mkdir(parents=True)
    (root / "panoptic").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "a.jpg")
    ids = np.zeros((8, 8, 3), np.uint8)
    ids[:4, :, 0] = 1
    ids[4:, :, 0] = 2
    Image.fromarray(ids).save(root / "panoptic" / "a.png")
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 8}],
        "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": [
            {"id": 1, "category_id": 7, "bbox": [0, 0, 8, 4], "area": 32, "iscrowd": 0},
            {"id": 2, "category_id": 9, "bbox": [0, 4, 8, 4], "area": 32, "iscrowd": 0}]}],
        "categories": [{"id": 7, "name": "bolt", "isthing": 1}, {"id": 9, "name": "floor", "isthing": 0}],
    }


@SETTINGS
@given(st.data())
def test_the_panoptic_reader_never_raises_anything_else(data):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        valid = _panoptic_world(root)
        text = data.draw(st.text()) if data.draw(st.integers(0, 3)) == 0 else json.dumps(_mutated(valid, data))
        (root / "panoptic.json").write_bytes(text.encode("utf-8", errors="replace"))
        try:
            dataset = PanopticDataset(root, strict=data.draw(st.booleans()))
            _ = dataset.names, dataset.is_thing
            for index in range(len(dataset)):
                sample = dataset.load(index)
                assert sample.ids.shape == (8, 8)
        except DenseVLMError as e:
            _one_line_error(e, str(root))
