"""Exports: COCO loads with pycocotools and masks round-trip, Label Studio percentages, verdict JSONL."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from densevlm.errors import DenseVLMError
from densevlm.review.export import export_reviews, labelstudio_config
from densevlm.review import session
from densevlm.review.store import ReviewStore


@pytest.fixture
def reviewed(imported):
    with ReviewStore(imported.db) as store:
        ids = {r["key"]: r["id"] for r in store.conn.execute("SELECT id, key FROM regions")}
        session.add_verdict(store, ids["a.png#1"], "ann", "category", "scratch", at=1000.0)
        session.add_verdict(store, ids["a.png#0"], "ann", "category", "nut", at=1001.0)
        session.add_verdict(store, ids["c.png#0"], "ann", "rejected", at=1002.0)
        session.add_verdict(store, ids["sub/b.png#1"], "bob", "unsure", at=1003.0)
        session.add_verdict(store, ids["c.png#2"], "bob", "category", "washer", thing=True, at=1004.0)
        session.add_verdict(store, ids["c.png#2"], "ann", "category", "washer", at=1005.0)
    return imported


def test_coco_export_loads_and_masks_round_trip(reviewed, tmp_path):
    out = export_reviews(reviewed.db, "coco", tmp_path / "out" / "coco.json")
    coco = COCO(str(out))
    assert sorted(im["file_name"] for im in coco.dataset["images"]) == ["a.png", "c.png", "sub/b.png"]
    cats = {c["name"]: c for c in coco.dataset["categories"]}
    assert set(cats) == {"bolt", "scratch", "nut", "washer", "conveyor belt", "steel plate"}
    assert cats["washer"]["isthing"] == 1 and cats["conveyor belt"]["isthing"] == 0
    anns = {a["region_id"]: a for a in coco.dataset["annotations"]}
    assert set(anns) == {"a.png#1", "a.png#0", "c.png#2"}  # rejected and unsure are not instances
    assert coco.loadCats(anns["a.png#0"]["category_id"])[0]["name"] == "nut"
    assert anns["a.png#0"]["bbox"] == [4.0, 4.0, 16.0, 16.0]
    assert anns["c.png#2"]["bbox"] == [10.0, 5.0, 10.0, 10.0]
    assert coco.loadCats(anns["c.png#2"]["category_id"])[0]["name"] == "washer"
    assert "segmentation" not in anns["a.png#0"]

    masked = anns["a.png#1"]
    assert masked["bbox"] == [20.0, 10.0, 24.0, 20.0]
    decoded = coco.annToMask(masked)
    np.testing.assert_array_equal(decoded, reviewed.masks["a.png#1"])
    assert masked["area"] == float(reviewed.masks["a.png#1"].sum())
    image = coco.loadImgs(masked["image_id"])[0]
    assert (image["file_name"], image["width"], image["height"]) == ("a.png", 64, 64)
    assert coco.getAnnIds(imgIds=[image["id"]]) and len(coco.getAnnIds(imgIds=[image["id"]])) == 2


def test_labelstudio_export_percent_coordinates(reviewed, tmp_path):
    out = export_reviews(reviewed.db, "labelstudio", tmp_path / "ls.json", image_prefix="/data/local-files/?d=imgs/")
    tasks = json.loads(out.read_text())
    by_image = {t["data"]["densevlm_image"]: t for t in tasks}
    assert set(by_image) == {"a.png", "sub/b.png", "c.png"}
    assert by_image["sub/b.png"]["data"]["image"] == "/data/local-files/?d=imgs/sub/b.png"

    a = {p["model_version"]: p["result"] for p in by_image["a.png"]["predictions"]}
    assert set(a) == {"expert-review", "teacher:tiny-teacher"}
    expert = {r["value"]["rectanglelabels"][0]: r for r in a["expert-review"]}
    assert set(expert) == {"nut", "scratch"}
    nut = expert["nut"]
    assert (nut["type"], nut["from_name"], nut["to_name"]) == ("rectanglelabels", "label", "image")
    assert (nut["original_width"], nut["original_height"]) == (64, 64)
    assert nut["value"]["x"] == pytest.approx(6.25) and nut["value"]["width"] == pytest.approx(25.0)
    belt = a["teacher:tiny-teacher"][0]
    assert belt["value"]["rectanglelabels"] == ["conveyor belt"]
    assert [belt["value"][k] for k in ("x", "y", "width", "height")] == pytest.approx([0.0, 62.5, 100.0, 37.5])
    assert belt["score"] == pytest.approx(0.92)

    b = {p["model_version"]: p["result"] for p in by_image["sub/b.png"]["predictions"]}
    assert set(b) == {"teacher:tiny-teacher"}  # one unreviewed, one unsure region
    boxes = {r["value"]["rectanglelabels"][0]: r["value"] for r in b["teacher:tiny-teacher"]}
    assert [boxes["nut"][k] for k in ("x", "y", "width", "height")] == pytest.approx(
        [100 * 10.5 / 64, 100 * 12.0 / 64, 100 * 19.5 / 64, 100 * 28.25 / 64]
    )
    c_labels = [r["value"]["rectanglelabels"][0] for p in by_image["c.png"]["predictions"] for r in p["result"]]
    assert sorted(c_labels) == ["scratch", "washer"]  # the rejected region c.png#0 is left out
    c = {p["model_version"]: p["result"] for p in by_image["c.png"]["predictions"]}
    washer = c["expert-review"][0]["value"]
    assert [washer[k] for k in ("x", "y", "width", "height")] == pytest.approx([100 * 10 / 48, 100 * 5 / 32, 100 * 10 / 48, 100 * 10 / 32])

    config = labelstudio_config(reviewed.db)
    assert '<RectangleLabels name="label" toName="image">' in config and '<Label value="washer"/>' in config


def test_jsonl_export_one_line_per_region(reviewed, tmp_path):
    out = export_reviews(reviewed.db, "jsonl", tmp_path / "verdicts.jsonl")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    by_id = {line["id"]: line for line in lines}
    assert len(lines) == 8 and len(by_id) == 8
    assert {k: v["final"] for k, v in by_id.items()} == {
        "a.png#0": "nut",
        "a.png#1": "scratch",
        "a.png#2": None,
        "sub/b.png#0": None,
        "sub/b.png#1": "unsure",
        "c.png#0": "rejected",
        "c.png#1": None,
        "c.png#2": "washer",
    }
    washer = by_id["c.png#2"]
    assert washer["status"] == "corrected" and washer["thing"] is True
    assert washer["reviewers"] == ["ann", "bob"] and washer["votes"] == {"ann": "washer", "bob": "washer"}
    assert washer["time"] == "1970-01-01T00:16:45+00:00"
    assert (washer["teacher_top1"], washer["teacher_confidence"]) == ("nut", pytest.approx(0.45))
    masked = by_id["a.png#1"]
    assert masked["status"] == "accepted" and masked["box"] == [20.0, 10.0, 44.0, 30.0]
    np.testing.assert_array_equal(mask_utils.decode(masked["mask"]), reviewed.masks["a.png#1"])
    assert by_id["c.png#0"]["thing"] is None and by_id["c.png#0"]["reviewers"] == ["ann"]


def test_export_is_atomic_and_checks_arguments(reviewed, tmp_path):
    out = tmp_path / "keep.json"
    out.write_text("previous export\n")
    with pytest.raises(DenseVLMError, match="review database not found"):
        export_reviews(tmp_path / "missing.sqlite", "coco", out)
    assert out.read_text() == "previous export\n"
    with pytest.raises(DenseVLMError, match="is a directory"):
        export_reviews(reviewed.db, "coco", tmp_path)
    with pytest.raises(DenseVLMError, match="unknown export format"):
        export_reviews(reviewed.db, "yolo", out)
    export_reviews(reviewed.db, "coco", out)
    assert json.loads(out.read_text())["annotations"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
