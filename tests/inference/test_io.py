"""Inputs, output names and boxes files of ``densevlm segment``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from densevlm.errors import DenseVLMError
from densevlm.inference.boxes import assign_boxes, load_boxes, oriented_size
from densevlm.inference.io import collect_inputs, output_paths


def _png(path: Path, size: tuple[int, int] = (8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)
    return path


def _rotated_jpeg(path: Path) -> Path:
    """A 64 x 48 JPEG whose EXIF says 'rotate 90 degrees': 48 x 64 once oriented."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (64, 48), (200, 10, 10)).save(path, exif=exif)
    return path


def test_folders_are_searched_recursively_and_names_never_collide(tmp_path):
    root = tmp_path / "photos"
    _png(root / "a.png")
    _png(root / "line1" / "a.png")
    _png(root / "x" / "b.png")
    _png(root / "x__b.png")
    _png(root / ".hidden.png")
    _png(root / "out" / "a.png.overlay.png")
    (root / "notes.txt").write_text("not an image")
    images = collect_inputs([str(root), str(root / "a.png")], exclude=root / "out")
    rels = [im.rel for im in images]
    assert sorted(rels) == ["a.png", "line1/a.png", "x/b.png", "x__b.png"]  # listed once, output folder skipped
    names = {im.rel: im.name for im in images}
    assert names["a.png"] == "a.png" and names["line1/a.png"] == "line1__a.png"
    assert names["x/b.png"] != names["x__b.png"]
    assert names["x/b.png"].startswith("x__b.png~") and names["x__b.png"].startswith("x__b.png~")
    assert len({output_paths(tmp_path, n)["json"] for n in names.values()}) == 4


def test_a_world_folder_means_its_images_and_a_file_named_twice_is_used_once(tmp_path, caplog):
    world = tmp_path / "world"
    _png(world / "images" / "000000.png")
    _png(world / "panoptic" / "000000.png")  # ground-truth masks, not photos
    (world / "panoptic.json").write_text("{}")
    (tmp_path / "link.png").symlink_to(world / "images" / "000000.png")
    (tmp_path / "hard").mkdir()
    (tmp_path / "hard" / "same.png").hardlink_to(world / "images" / "000000.png")
    images = collect_inputs([str(world), str(tmp_path / "link.png"), str(tmp_path / "hard")])
    assert [im.path for im in images] == [world / "images" / "000000.png"]
    assert "same.png: the same file as" in caplog.text
    assert f"{tmp_path / 'link.png'}: the same file as {world / 'images' / '000000.png'}; used once" in caplog.text


def test_globs_and_files(tmp_path):
    _png(tmp_path / "cam" / "day1" / "0001.jpg")
    _png(tmp_path / "cam" / "day2" / "0001.jpg")
    _png(tmp_path / "cam" / "day2" / "0002.png")
    images = collect_inputs([str(tmp_path / "cam" / "**" / "*.jpg")])
    assert [im.name for im in images] == ["day1__0001.jpg", "day2__0001.jpg"]
    single = collect_inputs([str(tmp_path / "cam" / "day2" / "0002.png")])
    assert [(im.rel, im.name) for im in single] == [("0002.png", "0002.png")]
    with pytest.raises(DenseVLMError, match="matches no files"):
        collect_inputs([str(tmp_path / "cam" / "*.tif")])
    with pytest.raises(DenseVLMError, match="no such file or folder"):
        collect_inputs([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DenseVLMError, match="no images"):
        collect_inputs([str(tmp_path / "empty")])


def test_coco_and_list_boxes_files(tmp_path):
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({
        "images": [{"id": 7, "file_name": "a.png"}],
        "annotations": [{"image_id": 7, "bbox": [1, 2, 3, 4]}, {"file_name": "b.png", "bbox": [0, 0, 8, 6]}],
    }))
    entries = load_boxes(coco)
    assert [(e.image, e.box) for e in entries] == [("a.png", (1, 2, 4, 6)), ("b.png", (0, 0, 8, 6))]
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps([{"image": "a.png", "box": [1.5, 2, 3, 4]}]))
    assert [(e.image, e.where, e.box) for e in load_boxes(plain)] == [("a.png", "entry [0]", (1.5, 2, 3, 4))]


@pytest.mark.parametrize("content, expected", [
    ({"images": [], "annotations": [{"file_name": "a.png", "bbox": [1, 1, 3, 3]}, {"file_name": "a.png", "bbox": [5, 5, -2, 3]}]},
     "annotations[1] (image a.png): box [5, 5, -2, 3] (x, y, width, height) is inverted"),
    ([{"image": "a.png", "box": [4, 1, 2, 3]}], "entry [0] (image a.png): box [4, 1, 2, 3] is inverted"),
    ([{"image": "a.png", "box": [-4, 1, 2, 3]}], "entry [0] (image a.png): box [-4, 1, 2, 3] is outside the image"),
    ([{"image": "a.png", "box": [1, 2, 3]}], "entry [0] (image a.png): 'box' must be 4 numbers"),
    ({"annotations": [{"image_id": 3, "bbox": [1, 1, 2, 2]}]}, "annotations[0]: no 'file_name', and image_id 3 is not in 'images'"),
    ({"boxes": []}, "expected a COCO object with 'annotations' or a list"),
])
def test_bad_boxes_files_name_the_file_the_entry_and_the_problem(tmp_path, content, expected):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DenseVLMError) as err:
        load_boxes(path)
    assert str(err.value).startswith(f"{path}: ") and expected in str(err.value)


def test_boxes_are_matched_to_images_and_checked_against_the_oriented_size(tmp_path):
    root = tmp_path / "in"
    _png(root / "a.png", (8, 6))
    _png(root / "sub" / "a.png", (8, 6))
    _png(root / "sub" / "c.png", (8, 6))
    _rotated_jpeg(root / "rot.jpg")
    assert oriented_size(root / "rot.jpg") == (48, 64)
    images = collect_inputs([str(root)])
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps([
        {"image": "a.png", "box": [0, 0, 8, 6]},
        {"image": "sub/a.png", "box": [1, 1, 2, 2]},
        {"image": "c.png", "box": [0, 0, 4, 4]},
        {"image": "rot.jpg", "box": [0, 0, 48, 64]},
        {"image": "elsewhere.png", "box": [0, 0, 1, 1]},
    ]))
    boxes = assign_boxes(load_boxes(path), images, path)
    assert sorted(boxes) == ["a.png", "rot.jpg", "sub__a.png", "sub__c.png"]
    np.testing.assert_array_equal(boxes["sub__a.png"][0], [[1, 1, 2, 2]])
    assert boxes["rot.jpg"][1] == ["entry [3]"]

    path.write_text(json.dumps([{"image": "rot.jpg", "box": [-0.5, 0, 48.5, 64]}, {"image": "a.png", "box": [1, 1, 3, 3]}]))
    clipped = assign_boxes(load_boxes(path), images, path)
    np.testing.assert_array_equal(clipped["rot.jpg"][0], [[0, 0, 48, 64]])
    np.testing.assert_array_equal(clipped["a.png"][0], [[1, 1, 3, 3]])
    path.write_text(json.dumps([{"image": "rot.jpg", "box": [0, 0, 64, 48]}]))
    with pytest.raises(DenseVLMError, match=r"entry \[0\] \(image rot.jpg\): box \[0, 0, 64, 48\] is outside the 48x64 image"):
        assign_boxes(load_boxes(path), images, path)
    _png(root / "other" / "c.png")
    path.write_text(json.dumps([{"image": "c.png", "box": [0, 0, 1, 1]}]))
    with pytest.raises(DenseVLMError, match="'c.png' matches other/c.png and sub/c.png"):
        assign_boxes(load_boxes(path), collect_inputs([str(root)]), path)


@pytest.mark.parametrize("pixels,mode", [
    (np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8), "RGB"),
    (np.random.default_rng(1).integers(0, 256, (1, 1), dtype=np.uint8), "L"),
    (np.random.default_rng(2).integers(0, 65536, (9, 300), dtype=np.uint16), "I;16"),
    (np.kron(np.arange(12, dtype=np.uint8).reshape(3, 4), np.ones((8, 8), np.uint8)), "L"),
])
@pytest.mark.parametrize("deflate", ["isal", "zlib"])
def test_encode_png_reads_back_as_the_same_pixels(pixels, mode, deflate, monkeypatch):
    """Either deflater (ISA-L where installed, else zlib) gives a PNG of exactly ``pixels``."""
    import io

    from densevlm import imaging

    if deflate == "isal":
        pytest.importorskip("isal")
    else:
        monkeypatch.setattr(imaging, "_isal_zlib", lambda: None)
    for level in (0, 1, 3, 9):
        image = Image.open(io.BytesIO(imaging.encode_png(pixels, level)))
        assert image.mode == mode and image.size == (pixels.shape[1], pixels.shape[0])
        np.testing.assert_array_equal(np.asarray(image), pixels)


def test_encode_png_refuses_other_arrays():
    from densevlm.imaging import encode_png

    for bad in (np.zeros((4, 4), np.float32), np.zeros((4, 4, 4), np.uint8), np.zeros(4, np.uint8)):
        with pytest.raises(DenseVLMError, match="a PNG holds"):
            encode_png(bad)
