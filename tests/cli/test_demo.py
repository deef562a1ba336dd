"""``densevlm demo``'s inspection stage: metrics added to the evaluation JSONs, and its summary line."""

from __future__ import annotations

import json
import re

from densevlm.cli.demo import _add_inspection, _inspection_line
from densevlm.data.synth import default_vocabulary, write_world


def test_inspection_metrics_go_into_the_eval_jsons_and_the_last_summary_line(tmp_path):
    val = write_world(tmp_path / "val", 30, seed=21, progress=False)
    out = tmp_path / "demo"
    (out / "densevlm").mkdir(parents=True)
    (out / "before.json").write_text(json.dumps({"box.fg_bias": 80.0}))
    (out / "densevlm" / "eval.json").write_text(json.dumps({"box.fg_bias": 5.0}))
    _add_inspection("tiny-student", [out / "before.json", out / "clipself" / "eval.json"], val, default_vocabulary(), 30)
    before = json.loads((out / "before.json").read_text())
    assert before["box.fg_bias"] == 80.0 and before["inspection.n_ok"] + before["inspection.n_ng"] == 30
    assert before["inspection.roc"]["false_alarm"][-1] == 1.0
    assert not (out / "clipself" / "eval.json").exists(), "a missing run is not invented"
    line = _inspection_line(out)
    assert re.fullmatch(r"inspection: NG items caught at 2 % false alarms \d+ % before -> n/a after DenseVLM "
                        r"\(CLIPSelf n/a\)", line), line
