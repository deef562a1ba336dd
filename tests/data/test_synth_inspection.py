"""`synth --defect-rate / --shift`: the requested NG share, its ground truth, and untouched reference worlds."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from densevlm.data.synth import write_world
from densevlm.data.synth.inspection import SHIFTS, is_ng
from densevlm.errors import DenseVLMError
from densevlm.vocab import load_vocabulary

# sha256 over (relative path, bytes) of every file but vocab.txt of write_world(out, 6, seed=7), made
# with the generator before the inspection flags existed (main at 5a6e522): the flags must not move it.
REFERENCE_DIGEST = "92b439b389707bd48c161fd47a6b518e15cebce3870169bc1829aedeac574418"


def _digest(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "vocab.txt":
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_without_flags_the_world_is_the_reference_one(tmp_path):
    write_world(tmp_path, 6, seed=7, progress=False)
    assert _digest(tmp_path) == REFERENCE_DIGEST
    assert not (tmp_path / "inspection.json").exists()


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5, 1.0])
def test_defect_rate_holds_in_every_window(rate):
    flags = np.array([is_ng(5, i, rate) for i in range(1000)])
    for start in (0, 100, 700):
        window = flags[start : start + 100]
        assert abs(window.sum() - 100 * rate) <= 2


def _ground_truth(world):
    panoptic = json.loads((world / "panoptic.json").read_text())
    names = {c["id"]: c["name"] for c in panoptic["categories"]}
    truth = json.loads((world / "inspection.json").read_text())
    return panoptic, names, truth


def test_defect_rate_world_and_its_ground_truth(tmp_path):
    world = tmp_path / "world"
    write_world(world, 40, seed=3, progress=False, defect_rate=0.5)
    panoptic, names, truth = _ground_truth(world)
    vocab = load_vocabulary(world / "vocab.txt")
    assert truth["defects"] == list(vocab.defects) and truth["defect_rate"] == 0.5
    assert abs(truth["n_ng"] - 20) <= 2
    for i, (ann, image) in enumerate(zip(panoptic["annotations"], truth["images"])):
        held = sorted({names[s["category_id"]] for s in ann["segments_info"]} & set(vocab.defects))
        assert image["defects"] == held and image["ng"] == bool(held) == is_ng(3, i, 0.5)
    again = tmp_path / "again"
    write_world(again, 40, seed=3, progress=False, defect_rate=0.5, workers=2)
    assert _digest(again) == _digest(world)


@pytest.mark.parametrize("shift", SHIFTS)
def test_shifts_draw_valid_worlds(tmp_path, shift):
    write_world(tmp_path, 12, seed=4, progress=False, defect_rate=0.5, shift=shift)
    reference = tmp_path / "reference"
    write_world(reference, 12, seed=4, progress=False, defect_rate=0.5)
    panoptic, names, truth = _ground_truth(tmp_path)
    assert truth["shift"] == shift and abs(truth["n_ng"] - 6) <= 2
    seen = set()
    for ann, image in zip(panoptic["annotations"], truth["images"]):
        png = np.asarray(Image.open(tmp_path / "panoptic" / ann["file_name"])).astype(np.int64)
        ids = png[..., 0] + 256 * png[..., 1] + 65536 * png[..., 2]
        assert set(np.unique(ids)) == {s["id"] for s in ann["segments_info"]}
        seen |= {names[s["category_id"]] for s in ann["segments_info"]}
        assert image["ng"] == bool(image["defects"])
    if shift == "new-surface":
        assert "cardboard" in seen
    if shift == "new-defect":
        assert "oil stain" in seen and not seen & {"scratch", "crack", "dent", "rust spot"}
        assert load_vocabulary(tmp_path / "vocab.txt").defects[-1] == "oil stain"
    brightness = [np.asarray(Image.open(w / "images" / "000000.png")).mean() for w in (tmp_path, reference)]
    if shift == "lighting":
        assert brightness[0] < 0.7 * brightness[1]


def test_bad_flags_are_one_line_errors(tmp_path):
    with pytest.raises(DenseVLMError, match="--defect-rate 1.5 must be in"):
        write_world(tmp_path, 2, defect_rate=1.5, progress=False)
    with pytest.raises(DenseVLMError, match="--shift fog is not one of"):
        write_world(tmp_path, 2, shift="fog", progress=False)


def test_plant_words_combine_with_the_defect_rate(tmp_path):
    from densevlm.cli.main import main
    from densevlm.data.synth.categories import PLANT

    world = tmp_path / "plant"
    assert main(["synth", "--out", str(world), "--n", "60", "--seed", "8", "--plant-words", "--defect-rate", "0.5",
                 "--workers", "1"]) == 0
    panoptic, names, truth = _ground_truth(world)
    vocab = load_vocabulary(world / "vocab.txt")
    plant_defects = [c.name for c in PLANT if c.supercategory == "defect"]
    assert set(plant_defects) <= set(vocab.defects) and "rivet" not in vocab.defects
    assert truth["defects"] == list(vocab.defects) and abs(truth["n_ng"] - 30) <= 2
    drawn = set()
    for i, (ann, image) in enumerate(zip(panoptic["annotations"], truth["images"])):
        held = sorted({names[s["category_id"]] for s in ann["segments_info"]} & set(vocab.defects))
        assert image["defects"] == held and image["ng"] == bool(held) == is_ng(8, i, 0.5)
        drawn |= {names[s["category_id"]] for s in ann["segments_info"]}
    assert {"rivet", *plant_defects} <= drawn, "plant words are drawn in an inspection world"
    assert all(not set(image["defects"]) for image in truth["images"] if not image["ng"])
