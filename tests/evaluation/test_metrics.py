"""Counters' per-class rows and the mean over a named subset of classes."""

from __future__ import annotations

import math

import pytest
import torch

from densevlm.errors import DenseVLMError
from densevlm.evaluation import RegionCounter, subset_mean_accuracy


def _filled() -> tuple[RegionCounter, list[str]]:
    """Classes a, b, burr (things), c (stuff), d (thing, never occurs); predictions are one-hot logits."""
    names = ["a", "b", "burr", "c", "d"]
    counter = RegionCounter(torch.tensor([True, True, True, False, True]))
    truth = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 3])
    pred = torch.tensor([0, 0, 0, 3, 1, 0, 0, 0, 2, 3])  # a 3/4, b 1/2, burr 1/3, c 1/1
    counter.update(torch.nn.functional.one_hot(pred, 5).float(), truth)
    return counter, names


def test_subset_mean_is_the_class_mean_over_the_named_classes_that_occur():
    counter, names = _filled()
    rows = counter.per_class(names)
    rows = [{**r, "box_acc1": r["acc1"]} for r in rows]
    assert subset_mean_accuracy(rows, ["a", "b", "d"]) == pytest.approx(100 * (3 / 4 + 1 / 2) / 2)  # d: n = 0
    assert subset_mean_accuracy(rows, ["burr"]) == pytest.approx(100 / 3)
    every_thing = subset_mean_accuracy(rows, ["a", "b", "burr", "d"])
    assert every_thing == pytest.approx(counter.summary("box")["box.thing.macc1"])
    assert math.isnan(subset_mean_accuracy(rows, ["d"]))
    assert subset_mean_accuracy([{**r, "mask_acc1": 0.0} for r in rows], ["a"], kind="mask") == 0.0


def test_a_name_that_is_not_a_class_is_refused():
    counter, names = _filled()
    rows = [{**r, "box_acc1": r["acc1"]} for r in counter.per_class(names)]
    with pytest.raises(DenseVLMError, match="porosity"):
        subset_mean_accuracy(rows, ["a", "porosity"])
