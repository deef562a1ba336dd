"""Caption sources for pretraining: region-aware crops and part-centred region-text pairs."""

from __future__ import annotations

import numpy as np
import pytest

from densevlm.data.captions import PanopticCaptionSource
from densevlm.data.panoptic import PanopticDataset
from densevlm.data.synth import make_caption, write_world
from densevlm.errors import DenseVLMError
from densevlm.training.pretrain import PretrainConfig


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("cap") / "world", 24, seed=5, progress=False)


def test_part_centred_captions_name_parts_and_never_the_background(world):
    dataset = PanopticDataset(world)
    stuff_words = [n for n, thing in zip(dataset.names, dataset.is_thing) if not thing]
    thing_words = [n for n, thing in zip(dataset.names, dataset.is_thing) if thing]
    source = PanopticCaptionSource(world, make_caption, p_stuff=1.0, part_crop_prob=1.0, seed=0)
    assert any(source.part_boxes)  # the world has parts to centre on
    _, captions = source.batch(0, 64)
    with_parts = [c for c, i in zip(captions, np.random.default_rng([0, 0]).integers(0, len(source), 64)) if source.part_boxes[i]]
    assert len(with_parts) > 32
    for caption in with_parts:
        assert not any(word in caption for word in stuff_words), caption
    assert sum(any(word in c for word in thing_words) for c in with_parts) > 0.9 * len(with_parts)


def test_part_box_is_centred_on_a_part_and_stays_in_the_image(world):
    source = PanopticCaptionSource(world, make_caption, part_crop_prob=1.0, seed=0)
    rng = np.random.default_rng(3)
    checked = 0
    for index, boxes in enumerate(source.part_boxes):
        h, w = source.images[index].shape[:2]
        for _ in range(4 if boxes else 0):
            x0, y0, x1, y1 = source._part_box(rng, index, h, w)
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert x1 - x0 >= min(8, w) and y1 - y0 >= min(8, h)
            holds = [px0 >= x0 - 1 and py0 >= y0 - 1 and px1 <= x1 + 1 and py1 <= y1 + 1 for px0, py0, px1, py1 in boxes]
            assert any(holds)  # enlarged by >= 1x about the part's centre, so the whole part is inside
            checked += 1
    assert checked > 20


def test_the_captioner_is_given_the_names_inside_each_sample(world):
    dataset = PanopticDataset(world)
    things = {n for n, thing in zip(dataset.names, dataset.is_thing) if thing}
    calls = []

    def record(rng, thing_names, stuff, p_stuff):
        calls.append((thing_names, stuff, p_stuff))
        return f"caption {len(calls)}"

    source = PanopticCaptionSource(world, record, p_stuff=0.3, crop_prob=0.5, seed=0)
    _, captions = source.batch(0, 16)
    assert captions == [f"caption {i}" for i in range(1, 17)]
    assert all(p == 0.3 for _, _, p in calls)
    assert all(set(t) <= things and stuff and all(n not in things and a > 0 for n, a in stuff) for t, stuff, _ in calls)
    assert any(t for t, _, _ in calls)


def test_shares_above_one_are_refused(world, tmp_path):
    cfg = PretrainConfig(data=str(world), out=str(tmp_path / "m.pt"), crop_prob=0.6, part_crop_prob=0.6)
    with pytest.raises(DenseVLMError, match="above 1"):
        cfg.check()
