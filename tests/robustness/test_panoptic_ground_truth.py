"""Kind: incomplete panoptic ground truth is counted and reported (or refused with --strict).

An annotation without ``segments_info`` and a PNG id the JSON does not list used to be
evaluated as void without a word.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from densevlm.data.panoptic import PanopticDataset
from densevlm.errors import DenseVLMError
from densevlm.evaluation import EvalConfig, evaluate
from tests.evaluation.stubs import ColourStub, write_panoptic

CATS = [("bolt", True), ("nut", True), ("steel plate", False)]
SCENES = [[(1, 0, (4, 4, 12, 12)), (2, 1, (16, 0, 32, 16))], [(1, 1, (0, 20, 8, 28))], [(1, 0, (20, 20, 28, 28))]]


def _world(tmp_path: Path, edit) -> tuple[Path, bytes]:
    root = write_panoptic(tmp_path / "world", SCENES, CATS, background=2)
    path = root / "panoptic.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return root, path.read_bytes()


def _drop_segments_info(data):
    del data["annotations"][1]["segments_info"]


def _unlist_a_segment(data):
    data["annotations"][0]["segments_info"] = [s for s in data["annotations"][0]["segments_info"] if s["id"] != 2]


@pytest.mark.parametrize("edit, fragment", [
    (_drop_segments_info, "1 of 3 annotations lack 'segments_info'"),
    (_unlist_a_segment, "1 image(s) hold PNG ids not listed in the JSON"),
])
def test_dropped_ground_truth_is_counted_in_one_warning_line(tmp_path, caplog, edit, fragment):
    root, before = _world(tmp_path, edit)
    dataset = PanopticDataset(root)
    with caplog.at_level(logging.WARNING, logger="densevlm"):
        evaluate(ColourStub(3), dataset, cfg=EvalConfig(size=32, square=True, batch_size=2), progress=False)
    lines = [r.getMessage() for r in caplog.records if "count as void" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith(str(root / "panoptic.json")) and fragment in lines[0]
    assert (root / "panoptic.json").read_bytes() == before


def test_complete_ground_truth_warns_nothing(tmp_path, caplog):
    root, _ = _world(tmp_path, lambda data: None)
    with caplog.at_level(logging.WARNING, logger="densevlm"):
        evaluate(ColourStub(3), PanopticDataset(root), cfg=EvalConfig(size=32, square=True), progress=False)
    assert not [r for r in caplog.records if "count as void" in r.getMessage()]


def test_strict_refuses_an_annotation_without_segments_info(tmp_path):
    root, _ = _world(tmp_path, _drop_segments_info)
    with pytest.raises(DenseVLMError, match=r"panoptic.json: 1 annotation\(s\) lack 'segments_info' \(e.g. "):
        PanopticDataset(root, strict=True)


def test_strict_refuses_an_unlisted_png_id(tmp_path):
    root, _ = _world(tmp_path, _unlist_a_segment)
    dataset = PanopticDataset(root, strict=True)
    with pytest.raises(DenseVLMError, match=r"segment id\(s\) in the PNG are not listed in .*panoptic.json \(e.g. 2\)"):
        dataset.load(0)


@pytest.mark.parametrize("strict, code", [(False, 0), (True, 2)])
def test_eval_cli_strict_flag(tmp_path, capsys, strict, code):
    from densevlm.cli.main import main

    root, before = _world(tmp_path, _unlist_a_segment)
    argv = ["eval", "--data", str(root), "--model", "tiny-student", "--no-crops", "--no-seg", "--device", "cpu"]
    assert main(argv + (["--strict"] if strict else [])) == code
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "error" in line or "void" in line]
    if strict:
        assert len(err) == 1 and "not listed in" in err[0] and str(root / "panoptic.json") in err[0]
    else:
        assert any("hold PNG ids not listed in the JSON" in line for line in err)
    assert (root / "panoptic.json").read_bytes() == before
