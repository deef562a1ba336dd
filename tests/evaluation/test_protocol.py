"""The region-classification protocol on hand-made datasets whose answers are known."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densevlm.data.panoptic import PanopticDataset
from densevlm.errors import DenseVLMError
from densevlm.evaluation import EvalConfig, evaluate
from tests.evaluation.stubs import ColourStub, write_panoptic

CATS = [("bolt", True), ("nut", True), ("steel plate", False), ("cloth", False), ("floor", False)]
CFG = EvalConfig(size=32, square=True, batch_size=3)


def _simple_world(root: Path) -> Path:
    # image 0: floor background (class 4), a bolt block, a plate block
    # image 1: cloth background (class 3), a nut block, a bolt block
    scenes = [
        [(1, 0, (4, 4, 12, 12)), (2, 2, (16, 0, 32, 16))],
        [(1, 1, (0, 20, 8, 28)), (2, 0, (20, 20, 28, 28))],
    ]
    write_panoptic(root / "a", scenes[:1], CATS, background=4)
    write_panoptic(root / "b", scenes[1:], CATS, background=3)
    return _merge(root, [root / "a", root / "b"])


def _merge(root: Path, parts: list[Path]) -> Path:
    out = root / "merged"
    (out / "images").mkdir(parents=True)
    (out / "panoptic").mkdir(parents=True)
    images, annotations, cats = [], [], None
    for n, part in enumerate(parts):
        data = json.loads((part / "panoptic.json").read_text())
        cats = data["categories"]
        for im, ann in zip(data["images"], data["annotations"]):
            name = f"{n}_{im['file_name']}"
            shutil.copy(part / "images" / im["file_name"], out / "images" / name)
            shutil.copy(part / "panoptic" / ann["file_name"], out / "panoptic" / name)
            images.append({**im, "id": len(images), "file_name": name})
            annotations.append({**ann, "image_id": len(annotations), "file_name": name})
    (out / "panoptic.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    return out


def test_perfect_model_scores_100(tmp_path):
    ds = PanopticDataset(_simple_world(tmp_path))
    m = evaluate(ColourStub(5), ds, cfg=CFG, progress=False).metrics
    for kind in ("box", "mask", "crop"):
        assert m[f"{kind}.thing.macc1"] == 100.0
        assert m[f"{kind}.stuff.macc1"] == 100.0 or kind == "box"
    assert m["mask.fg_bias"] == 0.0 and m["mask.bg_bias"] == 0.0
    # bilinear upsampling of the 8x8 logit map rounds the corners of the 8 px blocks
    assert 95.0 < m["pixel_acc"] < 100.0
    assert m["n_images"] == 2 and m["n_segments"] == 6


def test_box_of_background_sees_what_is_inside(tmp_path):
    """The floor's box is the whole image: its RoI feature mixes floor with the bolt and the
    plate. Floor covers 1024-64-256 = 704 px, so it still wins; the metric must say 100."""
    ds = PanopticDataset(_simple_world(tmp_path))
    m = evaluate(ColourStub(5), ds, cfg=CFG, progress=False).metrics
    assert m["box.stuff.macc1"] == 100.0


def test_foreground_bias_is_counted_exactly(tmp_path):
    ds = PanopticDataset(_simple_world(tmp_path))
    # the model sees cloth (3) as a bolt (0): one of the 3 stuff segments becomes a thing
    m = evaluate(ColourStub(5, remap={3: 0}), ds, cfg=CFG, progress=False).metrics
    assert m["mask.fg_bias"] == pytest.approx(100.0 / 3)
    # stuff mAcc over classes: plate 100, cloth 0, floor 100
    assert m["mask.stuff.macc1"] == pytest.approx(200.0 / 3)
    assert m["mask.thing.macc1"] == 100.0 and m["mask.bg_bias"] == 0.0


def test_mean_accuracy_is_over_classes_not_segments(tmp_path):
    # nine bolts, one nut; the model calls the nut a bolt
    scenes = [[(j + 1, 0, (8 * (j % 4), 8 * (j // 4), 8 * (j % 4) + 8, 8 * (j // 4) + 8)) for j in range(9)]]
    scenes.append([(1, 1, (8, 8, 16, 16))])
    root = write_panoptic(tmp_path / "imb", scenes, CATS, background=2)
    m = evaluate(ColourStub(5, remap={1: 0}), PanopticDataset(root), cfg=CFG, progress=False).metrics
    assert m["mask.n_thing"] == 10
    assert m["mask.thing.macc1"] == pytest.approx(50.0)  # (9/9 + 0/1) / 2, not 9/10


def test_top5_counts_rank(tmp_path):
    k = 7
    cats = [(f"thing{i}", True) for i in range(4)] + [(f"stuff{i}", False) for i in range(3)]
    root = write_panoptic(tmp_path / "t5", [[(1, 0, (0, 0, 16, 16))]], cats, background=4)
    # colour 0 emits a feature ranking class 0 third; every other colour emits itself
    bias = torch.eye(k)
    bias[0] = torch.tensor([0.3, 0.5, 0.4, 0.0, 0.0, 0.0, 0.0])
    m = evaluate(ColourStub(k, bias=bias), PanopticDataset(root), cfg=CFG, progress=False).metrics
    assert m["mask.thing.macc1"] == 0.0
    assert m["mask.thing.macc5"] == 100.0


def test_size_filter_skips_small_boxes(tmp_path):
    scenes = [[(1, 0, (0, 0, 2, 3)), (2, 1, (10, 10, 20, 20))]]  # a 2x3 bolt (6 px < 64) and a 10x10 nut
    root = write_panoptic(tmp_path / "small", scenes, CATS, background=2)
    res = evaluate(ColourStub(5), PanopticDataset(root), cfg=CFG, progress=False)
    assert res.metrics["n_segments"] == 2  # nut + plate background
    assert res.metrics["mask.n_thing"] == 1
    bigger = EvalConfig(size=32, min_box_side=2.0)
    assert evaluate(ColourStub(5), PanopticDataset(root), cfg=bigger, progress=False).metrics["n_segments"] == 3


def test_miou_from_known_confusion(tmp_path):
    # one image: left half plate (2), right half cloth (3); model sees cloth as plate
    root = write_panoptic(tmp_path / "seg", [[(1, 2, (0, 0, 16, 32)), (2, 3, (16, 0, 32, 32))]], CATS)
    m = evaluate(ColourStub(5, remap={3: 2}), PanopticDataset(root), cfg=CFG, progress=False).metrics
    # plate IoU = 512 / 1024 = 50 %, cloth IoU = 0 -> mIoU over present classes = 25 %
    assert m["miou"] == pytest.approx(25.0)
    assert m["pixel_acc"] == pytest.approx(50.0)


def test_an_input_padded_to_its_batch_is_scored_on_its_own_grid(tmp_path):
    # a 32 x 32 image and a 16 x 32 (w x h) one, without square padding: the narrow input is
    # padded to 32 x 32 in the batch; its masks and label map must still line up with its tokens
    halves = [(1, 2, (0, 0, 8, 32)), (2, 3, (8, 0, 16, 32))]
    square = write_panoptic(tmp_path / "square", [[(1, 2, (0, 0, 16, 32)), (2, 3, (16, 0, 32, 32))]], CATS)
    narrow = write_panoptic(tmp_path / "narrow", [halves], CATS)
    for folder in ("images", "panoptic"):
        path = narrow / folder / "0000.png"
        Image.fromarray(np.asarray(Image.open(path))[:, :16]).save(path)
    data = json.loads((narrow / "panoptic.json").read_text())
    data["images"][0]["width"] = 16
    (narrow / "panoptic.json").write_text(json.dumps(data))
    ds = PanopticDataset(_merge(tmp_path, [square, narrow]))
    padded = evaluate(ColourStub(5), ds, cfg=EvalConfig(size=32, square=False, batch_size=2), progress=False).metrics
    alone = evaluate(ColourStub(5), ds, cfg=EvalConfig(size=32, square=False, batch_size=1), progress=False).metrics
    assert padded["pixel_acc"] > 95.0 and padded["miou"] > 90.0 and padded["mask.stuff.macc1"] == 100.0
    for key in ("pixel_acc", "miou", "box.stuff.macc1", "box.n_stuff", "mask.stuff.macc1", "n_images"):
        assert padded[key] == alone[key], key


def _break(root: Path, how: str) -> None:
    data = json.loads((root / "panoptic.json").read_text())
    name = data["annotations"][0]["file_name"]
    if how == "missing_png":
        (root / "panoptic" / name).unlink()
    elif how == "absent_id":
        data["annotations"][0]["segments_info"][0]["id"] = 4242
    elif how == "unknown_category":
        data["annotations"][0]["segments_info"][0]["category_id"] = 77
    elif how == "gray_png":
        Image.open(root / "panoptic" / name).convert("L").save(root / "panoptic" / name)
    elif how == "missing_image":
        (root / "images" / data["images"][0]["file_name"]).unlink()
    (root / "panoptic.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    "how, message",
    [
        ("missing_png", "panoptic PNG not found"),
        ("absent_id", "segment id 4242 from the JSON is absent from the PNG"),
        ("unknown_category", "has unknown category id 77"),
        ("gray_png", "panoptic PNG must be RGB"),
        ("missing_image", "image file not found"),
    ],
)
def test_bad_items_fail_with_one_line_or_are_skipped(tmp_path, how, message):
    root = _simple_world(tmp_path)
    _break(root, how)
    with pytest.raises(DenseVLMError, match=message) as err:
        evaluate(ColourStub(5), PanopticDataset(root), cfg=CFG, progress=False)
    assert "0_0000.png" in str(err.value) and "\n" not in str(err.value)
    skip = EvalConfig(size=32, skip_bad=True)
    res = evaluate(ColourStub(5), PanopticDataset(root), cfg=skip, progress=False)
    assert res.metrics["n_skipped"] == 1 and res.metrics["n_images"] == 1
    assert message in res.skipped[0]


def test_empty_dataset(tmp_path):
    root = write_panoptic(tmp_path / "empty", [], CATS)
    with pytest.raises(DenseVLMError, match="dataset has no annotated images"):
        PanopticDataset(root)


def test_vocabulary_maps_by_name_and_checks_sections(tmp_path):
    from densevlm.evaluation import map_categories
    from densevlm.vocab import Vocabulary

    ds = PanopticDataset(_simple_world(tmp_path))
    vocab = Vocabulary.from_lists(["nut", "bolt", "washer"], ["floor", "cloth", ["plate", "steel plate"]])
    assert map_categories(ds, vocab) == [1, 0, 5, 4, 3]
    wrong = Vocabulary.from_lists(["bolt", "nut", "cloth"], ["steel plate", "floor"])
    with pytest.raises(DenseVLMError, match="'cloth' is stuff .* but 'cloth' is in the things section"):
        map_categories(ds, wrong)


def test_torchrun_two_processes_equal_one(tmp_path):
    from densevlm.data.synth import write_world
    from densevlm.model import load_model

    world = write_world(tmp_path / "world", 9, seed=123, progress=False)
    ckpt = load_model("tiny-vit").save(tmp_path / "m.pt")
    torchrun = Path(sys.executable).with_name("torchrun")
    common = ["eval", "--model", str(ckpt), "--data", str(world), "--batch-size", "2", "-q"]
    one = subprocess.run([sys.executable, "-m", "densevlm", *common, "--json", str(tmp_path / "one.json")],
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", "29517", "-m", "densevlm", *common,
                          "--json", str(tmp_path / "two.json")], capture_output=True, text=True)
    assert two.returncode == 0, two.stderr
    a = json.loads((tmp_path / "one.json").read_text())
    b = json.loads((tmp_path / "two.json").read_text())
    for key in ("wall_s",):
        a.pop(key), b.pop(key)
    assert a["n_images"] == 9
    assert a == b
