"""Kind: a speck threshold larger than the image.

An image far from square (20000x20, 640x1) got 0 segments because the default minimum area
(half a token, 0.5 * (patch / scale)^2 pixels) exceeded the image, while class_areas said 100 %
of one class. The default is now half of a token's pixels that lie inside the image, and a run
says when a limit removed every region. An image under 8 px across, as it is or inside the input
(640x1 at 64 px: 64 x 0.1), is refused in one line.
"""

from __future__ import annotations

import csv
import logging

import pytest
from PIL import Image

import densevlm
from densevlm.cli.main import main
from densevlm.data.synth import default_vocabulary
from densevlm.errors import DenseVLMError
from densevlm.imaging import plan_letterbox
from densevlm.inference.segment import default_min_area, segment


@pytest.fixture(scope="module")
def model():
    return densevlm.load_model("tiny-student")


@pytest.mark.parametrize("width, height", [(640, 1), (1, 640), (20000, 20), (64, 64)])
def test_the_default_never_exceeds_the_image(width, height):
    for size, patch in ((64, 8), (448, 16)):
        plan = plan_letterbox(width, height, size, patch, square=True)
        assert 1 <= default_min_area(plan, patch) <= max(1, width * height // 2 + 1)


@pytest.mark.parametrize("width, height", [(640, 80), (80, 640), (20000, 2500)])
def test_a_thin_image_of_one_colour_is_one_segment_covering_it(model, width, height):
    # the thinnest an image may be: 8 px across inside the 64 px input
    result = segment(model, Image.new("RGB", (width, height), (120, 120, 120)), default_vocabulary())
    top, share = result.class_areas()[0]
    assert share >= 0.95  # at 8 px across, the padding next to the content reaches a few edge pixels
    assert len(result.segments) >= 1 and result.segments[0].category == top
    assert sum(s.area for s in result.segments) >= 0.95 * width * height


@pytest.mark.parametrize("width, height", [(640, 1), (1, 640), (20000, 20)])
def test_a_thinner_image_is_refused_in_one_line(model, width, height):
    with pytest.raises(DenseVLMError) as err:
        segment(model, Image.new("RGB", (width, height), (120, 120, 120)), default_vocabulary())
    assert f"image is {width}x{height} px, too" in str(err.value) and "\n" not in str(err.value)


def test_a_run_says_when_the_limit_removed_every_region(tmp_path, capsys):
    Image.new("RGB", (40, 30), (90, 160, 200)).save(tmp_path / "plate.png")
    out = tmp_path / "seg"
    assert main(["segment", str(tmp_path / "plate.png"), "--out", str(out), "--model", "tiny-student",
                 "--workers", "0", "--min-area", "5000"]) == 0
    with open(out / "summary.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["status"] == "ok" and row["segments"] == "0"
    assert "every region is under the minimum area of 5000 pixels" in row["reason"]
    warnings = [line for line in capsys.readouterr().err.splitlines() if "no segments" in line]
    assert len(warnings) == 1 and str(tmp_path / "plate.png") in warnings[0]
