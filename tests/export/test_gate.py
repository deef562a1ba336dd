"""The accuracy gate's text report says which limits it checked."""

from __future__ import annotations

from densevlm.export.gate import format_gate


def _result(labelled):
    heldout = {"images": 4, "label_agreement": 0.995, "tokens": 256, "box_agreement": 0.99, "boxes": 40,
               "token_cos_mean": 0.9999, "box_score_max_abs": 1e-3}
    return {"heldout": heldout, "labelled": labelled, "min_agreement": 0.97, "max_macc_drop": 1.0, "failures": [],
            "passed": True}


def test_the_box_macc_limit_is_shown_only_when_a_labelled_set_was_scored():
    without = format_gate(_result(None))
    assert "box mAcc drop" not in without and "box mAcc not checked; --eval-data adds it" in without
    rows = {k: {"fp32": 70.0, "export": 69.5, "change": -0.5} for k in ("box.thing.macc1", "box.stuff.macc1", "fg_bias")}
    with_labels = format_gate(_result({"data": "val/", "images": 10, **rows}))
    assert "box mAcc drop <= 1 points" in with_labels and "not checked" not in with_labels
    assert "box.thing.macc1" in with_labels and "change -0.50" in with_labels
