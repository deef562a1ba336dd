"""Kind: every command sees an image in one frame (EXIF orientation applied).

`retrieve` sized a phone photo upright while `review init` compared against the raw header and
refused the whole import.
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from densevlm.imaging import image_size
from densevlm.review.candidates import CandidatesFile

from tests.review.conftest import header, region


def test_review_import_accepts_an_exif_rotated_photo_sized_upright(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: the stored 128x64 pixels show upright as 64x128
    Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(images / "phone.jpg", exif=exif)
    upright = image_size(images / "phone.jpg")
    assert upright == (64, 128)
    lines = [header(images), region("phone.jpg#0", "phone.jpg", upright, [1.0, 2.0, 30.0, 100.0], [("bolt", 0.9)])]
    path = tmp_path / "candidates.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    before = path.read_bytes()
    loaded = CandidatesFile.load(path, None)
    assert loaded.sizes == {"phone.jpg": (64, 128)}
    assert path.read_bytes() == before


def _rotated_photo(images) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 128x64, upright 64x128
    Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(images / "phone.jpg", exif=exif)


def test_a_database_made_before_the_exif_fix_gets_a_clear_line(tmp_path):
    """A pre-fix database stored the raw 128x64; importing the upright 64x128 names the cause."""
    import sqlite3

    import pytest

    from densevlm.errors import DenseVLMError
    from densevlm.review.importing import import_candidates

    images = tmp_path / "images"
    images.mkdir()
    _rotated_photo(images)
    db = tmp_path / "review.sqlite"
    first = tmp_path / "first.jsonl"
    first.write_text("".join(json.dumps(line) + "\n" for line in [
        header(images), region("phone.jpg#0", "phone.jpg", (64, 128), [1.0, 2.0, 30.0, 100.0], [("bolt", 0.9)])]))
    import_candidates(db, first, None)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE images SET width = 128, height = 64")  # what the old importer stored
    conn.commit()
    conn.close()
    again = tmp_path / "again.jsonl"
    again.write_text("".join(json.dumps(line) + "\n" for line in [
        header(images), region("phone.jpg#1", "phone.jpg", (64, 128), [5.0, 5.0, 20.0, 40.0], [("bolt", 0.8)])]))
    before = db.read_bytes()
    with pytest.raises(DenseVLMError) as info:
        import_candidates(db, again, None)
    message = str(info.value)
    assert message.startswith(f"{again}:2: image 'phone.jpg' is 64x128 upright (EXIF orientation applied) but 128x64")
    assert "an older densevlm made without applying EXIF orientation" in message and "new database" in message
    assert db.read_bytes() == before


def test_panoptic_ground_truth_is_read_in_its_stored_frame(tmp_path):
    """COCO PNGs and boxes describe the stored pixels: an EXIF tag on the photo must not turn it
    away from its PNG (a size mismatch when not square, silently wrong pixels when square)."""
    from densevlm.data.panoptic import PanopticDataset
    from tests.evaluation.stubs import write_panoptic

    world = write_panoptic(tmp_path / "world", [[(1, 0, (2, 4, 12, 20))]], [("bolt", True), ("floor", False)],
                           background=1)
    stored = Image.open(world / "images" / "0000.png").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(world / "images" / "0000.png", exif=exif)
    before = (world / "images" / "0000.png").read_bytes()
    sample = PanopticDataset(world).load(0)
    assert np.array_equal(np.asarray(sample.image), np.asarray(stored))
    assert sample.ids.shape == (sample.image.height, sample.image.width)
    bolt = sample.ids == 1
    assert np.asarray(sample.image)[bolt].std(axis=0).max() == 0  # the bolt's pixels are the bolt's colour
    assert (world / "images" / "0000.png").read_bytes() == before
