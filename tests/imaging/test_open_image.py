"""open_image of a file with several frames: the first frame, and one warning line naming the file
(not for a camera's MPO JPEG, whose further frames are previews of the same picture)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from densevlm.imaging import open_image


def _frames(n: int) -> list[Image.Image]:
    return [Image.fromarray(np.full((12, 16, 3), 40 * (i + 1), dtype=np.uint8)) for i in range(n)]


@pytest.mark.parametrize("name", ["anim.gif", "pages.tif", "anim.png", "anim.webp"])
def test_several_frames_give_the_first_and_one_warning(tmp_path, caplog, name):
    frames = _frames(3)
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], lossless=True)
    with caplog.at_level(logging.WARNING, logger="densevlm"):
        image = open_image(tmp_path / name)
    assert image.getpixel((3, 3)) == (40, 40, 40)
    assert [r.getMessage() for r in caplog.records] == [f"{tmp_path / name}: 3 frames; using the first"]


@pytest.mark.parametrize("name, options", [("one.gif", {}), ("one.tif", {}), ("camera.mpo", {"save_all": True})])
def test_one_picture_says_nothing(tmp_path, caplog, name, options):
    frames = _frames(2)
    if options:
        options["append_images"] = frames[1:]
    frames[0].save(tmp_path / name, format="MPO" if name.endswith(".mpo") else None, **options)
    with caplog.at_level(logging.WARNING, logger="densevlm"):
        image = open_image(tmp_path / name)
    assert image.getpixel((3, 3)) == (40, 40, 40)
    assert caplog.records == []
