"""``synth --plant-words``: the four plant words are drawn, listed, and never captioned."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from densevlm.data.captions import PanopticCaptionSource
from densevlm.data.synth import make_caption, write_world
from densevlm.data.synth.categories import PLANT, PLANT_WORDS, STUFF, THINGS
from densevlm.data.synth.plant import PLANT_DRAWERS, plant_things
from densevlm.data.synth.scene import make_scene
from densevlm.vocab import load_vocabulary

# sha256 over (relative path, bytes) of every file but vocab.txt of `write_world(out, 12, seed=11)`,
# computed with main's generator before the [defects] section existed (vocab.txt gained it, issue 14):
# the reference world's images and annotations must not change by a byte.
REFERENCE_DIGEST = "16c4e66376f242dbf2294236a34566ee839e75582f64704573fa251e2d01e6b9"


def _digest(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "vocab.txt":
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _words(text: str) -> str:
    return " " + " ".join(text.lower().split()) + " "


def test_reference_world_is_byte_identical_without_the_flag(tmp_path):
    assert _digest(write_world(tmp_path / "ref", 12, seed=11, progress=False)) == REFERENCE_DIGEST


def test_plant_world_draws_lists_and_never_captions_plant_words(tmp_path):
    out = write_world(tmp_path / "plant", 120, seed=3, progress=False, plant_words=True)
    data = json.loads((out / "panoptic.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    assert set(PLANT_WORDS) <= set(names.values())
    drawn = {names[s["category_id"]] for a in data["annotations"] for s in a["segments_info"]}
    assert set(PLANT_WORDS) <= drawn, "every plant word occurs in 120 scenes"
    vocab = load_vocabulary(out / "vocab.txt")
    assert all(vocab.is_thing[vocab.index(w)] for w in PLANT_WORDS)
    assert any(c.supercategory == "defect" for c in PLANT)
    for line in (out / "captions.jsonl").read_text().splitlines():
        caption = _words(json.loads(line)["caption"])
        assert not any(f" {w} " in caption for w in PLANT_WORDS), caption
    # region captions of pretraining (crops, part boxes) never name them either
    source = PanopticCaptionSource(out, make_caption, p_stuff=0.5, crop_prob=0.5, part_crop_prob=0.5, seed=1)
    for step in range(10):
        for caption in source.batch(step, 32)[1]:
            assert not any(f" {w} " in _words(caption) for w in PLANT_WORDS), caption


def test_captions_never_name_plant_words_over_many_seeds():
    stuff = [(c.name, 100) for c in STUFF[:2]]
    for seed in range(300):
        rng = np.random.default_rng(seed)
        things = plant_things(rng, int(rng.integers(1, 4)))
        caption = _words(make_caption(rng, things, stuff, p_stuff=0.5))
        assert not any(f" {w} " in caption for w in PLANT_WORDS), caption
        for t in things:
            if t not in PLANT_WORDS:
                assert t in caption or t.split()[0] in caption


def test_plant_words_have_their_own_look():
    """Each plant word's drawer paints a non-empty region that changes the image there."""
    for name, draw in PLANT_DRAWERS.items():
        rng = np.random.default_rng(0)
        inst = draw(rng, 64, 64, 1.0)
        assert inst.category == name and inst.mask.sum() >= 10
        base = np.full((64, 64, 3), 0.5)
        painted = inst.paint(base)
        assert np.abs(painted - base)[inst.mask].mean() > 0.1
        assert np.array_equal(painted[~inst.mask], base[~inst.mask])


def test_plant_scenes_use_all_fourteen_things():
    seen = set()
    for i in range(80):
        scene = make_scene(np.random.default_rng([5, i]), choose_things=plant_things)
        seen |= {s.category for s in scene.segments if s.isthing}
    assert seen == {c.name for c in THINGS + PLANT}
