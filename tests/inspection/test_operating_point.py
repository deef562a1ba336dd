"""``op.json``: every field checked on load, and a hand-edited vocabulary refused."""

from __future__ import annotations

import json

import pytest

from densevlm.data.synth import default_vocabulary
from densevlm.errors import DenseVLMError
from densevlm.inspection.operating_point import OperatingPoint
from densevlm.inspection.scores import ScoreConfig


@pytest.fixture
def saved(tmp_path):
    op = OperatingPoint("tiny-student", "ab" * 32, default_vocabulary().to_text(), ScoreConfig("window", 32, 64),
                        ng_threshold=0.9, unsure_threshold=0.8, target_false_alarm=0.02, unsure_band=0.05)
    path = op.save(tmp_path / "op.json")
    return path, json.loads(path.read_text())


def test_a_saved_point_loads_back_and_names_its_file(saved):
    path, _ = saved
    op = OperatingPoint.load(path)
    assert (op.ng_threshold, op.unsure_threshold, op.score.min_area, op.score.size) == (0.9, 0.8, 32, 64)
    assert op.vocab == default_vocabulary() and op.source == str(path)
    with pytest.raises(DenseVLMError, match=f"operating point {path} was calibrated for another model"):
        op.check("cd" * 32, op.vocab)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["thresholds"].update(ng=float("nan")), "thresholds.ng must be a number in [0, 1], got nan"),
    (lambda d: d["thresholds"].update(ng=-0.1), "thresholds.ng must be a number in [0, 1], got -0.1"),
    (lambda d: d["thresholds"].update(ng=1.5), "thresholds.ng must be a number in [0, 1], got 1.5"),
    (lambda d: d["thresholds"].update(ng="0.9"), "thresholds.ng must be a number in [0, 1], got '0.9'"),
    (lambda d: d["thresholds"].update(unsure=0.99), "thresholds.unsure must be a number in [0, 0.9], got 0.99"),
    (lambda d: d["score"].update(size=0), "score.size must be a whole number of pixels >= 1, got 0"),
    (lambda d: d["score"].update(size=64.5), "score.size must be a whole number of pixels >= 1, got 64.5"),
    (lambda d: d["score"].update(size=10**9), "score.size must be at most 4096 px, got 1000000000"),
    (lambda d: d["score"].update(min_area=True), "score.min_area must be a whole number of pixels >= 1, got True"),
    (lambda d: d["score"].update(low_confidence="high"), "score.low_confidence must be a number in [0, 1], got 'high'"),
    (lambda d: d["score"].update(method="mean"), "score method 'mean' is not one of"),
    (lambda d: d.update(model="tiny-student"), "missing a field or has one of the wrong kind"),
    (lambda d: d["model"].update(sha256=""), "model.sha256 must be a non-empty string"),
    (lambda d: d.pop("thresholds"), "missing a field or has one of the wrong kind (KeyError: 'thresholds')"),
    (lambda d: d["vocabulary"].update(text=d["vocabulary"]["text"].replace("[defects]\n", "[defects]\nnut\n")),
     "vocabulary.text does not match the vocabulary's fingerprint and defects it was calibrated with"),
    (lambda d: d["vocabulary"].update(defects=["scratch"]),
     "vocabulary.text does not match the vocabulary's fingerprint and defects it was calibrated with"),
])
def test_a_hand_edited_point_is_one_line_naming_the_file_and_field(saved, edit, message):
    path, data = saved
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DenseVLMError) as err:
        OperatingPoint.load(path)
    assert message in str(err.value) and "\n" not in str(err.value) and str(err.value).startswith(f"{path}: ")
