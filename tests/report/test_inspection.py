"""The report's inspection section: ROC per model, recall at the chosen false-alarm rate, confusion, NG overlays."""

from __future__ import annotations

import base64
import csv
import json

import numpy as np
import pytest
from PIL import Image

from densevlm.cli.main import main
from densevlm.errors import DenseVLMError
from densevlm.report import inspection_section, recall_at, write_report
from densevlm.report.inspection import ng_overlays
from tests.report.test_report import BIASED, FIXED, _eval, _run

DEFECTS = ["scratch", "dent"]


def _inspection(fa: list[float], recall: list[float], counts: list[list[int]]) -> dict:
    return {"inspection.roc": {"false_alarm": fa, "recall": recall}, "inspection.image_auroc": 0.8,
            "inspection.aupro": 0.4, "inspection.n_ok": 50, "inspection.n_ng": 50,
            "inspection.recall_at_fa_0.01": 0.1, "inspection.recall_at_fa_0.05": 0.5,
            "inspection.confusion": {"defects": DEFECTS, "columns": [*DEFECTS, "not a defect"], "counts": counts}}


# before: weak at low false-alarm rates; after: strong
BEFORE = _inspection([0.0, 0.0, 0.04, 0.3, 1.0], [0.0, 0.1, 0.2, 0.7, 1.0], [[2, 1, 7], [0, 3, 7]])
AFTER = _inspection([0.0, 0.0, 0.01, 0.02, 0.5, 1.0], [0.0, 0.3, 0.6, 0.75, 0.9, 1.0], [[8, 1, 1], [1, 8, 1]])


def test_recall_is_read_off_the_roc_at_the_chosen_rate():
    roc = AFTER["inspection.roc"]
    assert recall_at(roc, 0.02) == 0.75 and recall_at(roc, 0.015) == 0.6 and recall_at(roc, 0.0) == 0.3
    assert recall_at(BEFORE["inspection.roc"], 0.02) == 0.1
    assert np.isnan(recall_at({"false_alarm": [], "recall": []}, 0.02))
    with pytest.raises(DenseVLMError, match="2 false-alarm rates but 1 recalls"):
        recall_at({"false_alarm": [0.0, 1.0], "recall": [1.0]}, 0.02)


def test_section_lists_models_with_an_inspection_block_only():
    rows = [("before", {**_eval(80.0, 10.0, 30.0, BIASED), **BEFORE}), ("after", {**_eval(5.0, 70.0, 40.0, FIXED), **AFTER}),
            ("no inspection", _eval(5.0, 70.0, 40.0, FIXED))]
    page = inspection_section(rows, false_alarm=0.02)
    assert "recall at 2&nbsp;% false alarms" in page
    assert "<tr><td>before</td><td>10.0</td><td>80.0</td><td>40.0</td><td>50 / 50</td></tr>" in page
    assert "<tr><td>after</td><td>75.0</td>" in page and "no inspection" not in page
    assert page.count("<img ") == 2  # ROC curves and the defect confusion
    for chunk in page.split('src="data:image/png;base64,')[1:]:
        assert base64.b64decode(chunk.split('"', 1)[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<tr><td>after</td><td>60.0</td>" in inspection_section(rows, false_alarm=0.01)
    assert inspection_section(rows[2:]) == ""
    with pytest.raises(DenseVLMError, match="must be in"):
        inspection_section(rows, false_alarm=1.5)


def _inspect_dir(root, verdicts: list[str]):
    (root / "overlays").mkdir(parents=True)
    with open(root / "verdicts.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "verdict", "score", "defects", "reason", "overlay"])
        for i, v in enumerate(verdicts):
            w.writerow([f"line/{i:03d}.png", v, 0.5, "", "", f"overlays/{i:03d}.png"])
            Image.fromarray(np.full((8, 8, 3), 30 * i, dtype=np.uint8)).save(root / "overlays" / f"{i:03d}.png")
    return root


def test_report_and_cli_show_the_section_and_ng_overlays(tmp_path):
    before = {**_eval(80.0, 10.0, 30.0, BIASED), **BEFORE}
    run = _run(tmp_path, "densevlm", "densevlm", {**_eval(5.0, 70.0, 40.0, FIXED), **AFTER}, before)
    plain = _run(tmp_path, "plain", "densevlm", _eval(5.0, 70.0, 40.0, FIXED), _eval(80.0, 10.0, 30.0, BIASED))
    assert "Inspection: OK or NG" not in write_report([plain], tmp_path / "plain.html").read_text()
    inspected = _inspect_dir(tmp_path / "verdicts", ["OK", "NG", "UNSURE", "NG", "NG", "NG", "NG"])
    assert [p.name for p in ng_overlays(inspected)] == ["001.png", "003.png", "004.png", "005.png"]
    out = tmp_path / "r.html"
    assert main(["report", str(run), "--out", str(out), "--inspect-dir", str(inspected), "--false-alarm", "0.01"]) == 0
    page = out.read_text()
    assert "<h2>Inspection: OK or NG</h2>" in page and "recall at 1&nbsp;% false alarms" in page
    assert "<tr><td>student before adaptation</td><td>10.0</td>" in page and "<tr><td>densevlm</td><td>60.0</td>" in page
    assert page.count("<h3>Items called NG</h3>") == 1 and 'alt="005.png"' in page and 'alt="006.png"' not in page
    with pytest.raises(DenseVLMError, match="no verdicts.csv"):
        ng_overlays(tmp_path)
    json.loads((run / "eval.json").read_text())  # the inputs are read, never rewritten
