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
