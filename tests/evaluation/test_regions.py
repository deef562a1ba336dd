"""The protocol on labelled regions (e.g. reviewed ones), with a model whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from densevlm.errors import DenseVLMError
from densevlm.evaluation import EvalConfig, evaluate_regions
from densevlm.regions.labelled import LabelledRegion
from densevlm.vocab.vocabulary import Vocabulary
from tests.evaluation.stubs import ColourStub, write_panoptic

VOCAB = Vocabulary.from_lists(["bolt", "nut"], ["steel plate", "cloth", "floor"])
CATS = [("bolt", True), ("nut", True), ("steel plate", False), ("cloth", False), ("floor", False)]
CFG = EvalConfig(size=32, square=True)  # the 64 px image is evaluated at half size


def _rle(height: int, width: int, box: tuple[int, int, int, int]) -> dict:
    x1, y1, x2, y2 = box
    m = np.zeros((height, width), dtype=np.uint8, order="F")
    m[y1:y2, x1:x2] = 1
    rle = mask_utils.encode(m)
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


@pytest.fixture
def image(tmp_path) -> str:
    # a 64 x 64 floor with a 16 x 16 bolt block at (8, 8)
    root = write_panoptic(tmp_path / "w", [[(1, 0, (8, 8, 24, 24))]], CATS, size=64, background=4)
    return str(root / "images" / "0000.png")


def test_box_mask_and_crop_features_by_hand(image):
    regions = [
        LabelledRegion(image, (8.0, 8.0, 24.0, 24.0), "bolt", True),  # tight box: right
        # the whole image is mostly floor, so its box is called floor; its mask is the bolt block
        LabelledRegion(image, (0.0, 0.0, 64.0, 64.0), "Bolt", True, _rle(64, 64, (8, 8, 24, 24)), status="corrected"),
        LabelledRegion(image, (32.0, 32.0, 64.0, 64.0), "floor", False),
    ]
    m = evaluate_regions(ColourStub(5), regions, VOCAB, CFG, progress=False).metrics
    assert (m["box.n_thing"], m["box.n_stuff"], m["mask.n_thing"], m["mask.n_stuff"]) == (2, 1, 1, 0)
    assert m["box.thing.macc1"] == 50.0 and m["box.bg_bias"] == 50.0
    assert m["box.stuff.macc1"] == 100.0
    assert m["mask.thing.macc1"] == 100.0 and m["mask.bg_bias"] == 0.0
    assert m["crop.thing.macc1"] == 50.0
    assert m["n_images"] == 1 and m["n_segments"] == 3


@pytest.mark.parametrize("region,message", [
    (LabelledRegion("x.png", (0.0, 0.0, 4.0, 4.0), None, status="rejected", region_id="r7"), "region r7 has no category"),
    (LabelledRegion("x.png", (0.0, 0.0, 4.0, 4.0), "gasket"), "'gasket' of region box"),
])
def test_regions_without_a_known_category_are_refused(region, message):
    with pytest.raises(DenseVLMError, match=message):
        evaluate_regions(ColourStub(5), [region], VOCAB, CFG, progress=False)


def test_a_mask_of_another_size_names_the_image(image):
    region = LabelledRegion(image, (8.0, 8.0, 24.0, 24.0), "bolt", True, _rle(32, 64, (8, 8, 24, 24)))
    with pytest.raises(DenseVLMError, match=r"0000\.png: masks of shape"):
        evaluate_regions(ColourStub(5), [region], VOCAB, CFG, progress=False)
