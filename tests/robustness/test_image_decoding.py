"""Kind: every Pillow mode decodes to the same RGB picture as its 8-bit version.

A float TIFF holding [0, 1] once decoded all black; 16-bit, 32-bit, palette, alpha, CMYK and
YCbCr files must all land in the frame and value range of the 8-bit picture.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from densevlm.errors import DenseVLMError
from densevlm.imaging import image_size, open_image, to_rgb


def _gray() -> np.ndarray:
    """``[24, 32]`` uint8 picture: a ramp plus a bright square (values span 0..255)."""
    y, x = np.mgrid[0:24, 0:32]
    gray = (x * 255 // 31).astype(np.uint8)
    gray[6:14, 10:20] = 255 - gray[6:14, 10:20]
    return gray


def _colour() -> np.ndarray:
    """``[24, 32, 3]`` uint8 picture with fewer than 256 colours (so a palette holds it exactly)."""
    g = _gray() // 32 * 32
    return np.stack([g, 255 - g, np.roll(g, 7, axis=1)], axis=-1)


def _frombytes(mode: str, array: np.ndarray) -> Image.Image:
    return Image.frombytes(mode, (array.shape[1], array.shape[0]), array.tobytes())


# mode -> (builder from the 8-bit picture, reference 8-bit RGB array, tolerance in grey levels)
def _cases():
    gray, rgb = _gray(), _colour()
    gray_rgb = np.repeat(gray[..., None], 3, axis=-1)
    binary = np.where(gray > 127, 255, 0).astype(np.uint8)
    opaque = np.full(gray.shape, 255, np.uint8)
    rgb_im = Image.fromarray(rgb)
    return {
        "F in [0, 1]": (lambda: Image.fromarray(gray.astype(np.float32) / 255.0, mode="F"), gray_rgb, 1),
        "F in [0, 255]": (lambda: Image.fromarray(gray.astype(np.float32), mode="F"), gray_rgb, 1),
        "I in [0, 255]": (lambda: Image.fromarray(gray.astype(np.int32), mode="I"), gray_rgb, 0),
        "I in [0, 65535]": (lambda: Image.fromarray(gray.astype(np.int32) * 257, mode="I"), gray_rgb, 1),
        "I;16": (lambda: _frombytes("I;16", (gray.astype("<u2") * 257)), gray_rgb, 1),
        "I;16L": (lambda: _frombytes("I;16L", (gray.astype("<u2") * 257)), gray_rgb, 1),
        "I;16B": (lambda: _frombytes("I;16B", (gray.astype(">u2") * 257)), gray_rgb, 1),
        "I;16N": (lambda: _frombytes("I;16N", (gray.astype(np.uint16) * 257)), gray_rgb, 1),
        "1": (lambda: Image.fromarray(binary).convert("1"), np.repeat(binary[..., None], 3, axis=-1), 0),
        "L": (lambda: Image.fromarray(gray), gray_rgb, 0),
        "LA": (lambda: Image.fromarray(np.stack([gray, opaque], -1), mode="LA"), gray_rgb, 0),
        "La": (lambda: Image.fromarray(np.stack([gray, opaque], -1), mode="LA").convert("La"), gray_rgb, 0),
        "P": (lambda: rgb_im.convert("P", palette=Image.ADAPTIVE, colors=256), rgb, 0),
        "PA": (lambda: rgb_im.convert("P", palette=Image.ADAPTIVE, colors=256).convert("PA"), rgb, 0),
        "RGBA": (lambda: rgb_im.convert("RGBA"), rgb, 0),
        "RGBa": (lambda: rgb_im.convert("RGBA").convert("RGBa"), rgb, 0),
        "RGBX": (lambda: rgb_im.convert("RGBX"), rgb, 0),
        "CMYK": (lambda: rgb_im.convert("CMYK"), rgb, 0),
        "YCbCr": (lambda: rgb_im.convert("YCbCr"), rgb, 4),
        "HSV": (lambda: rgb_im.convert("HSV"), rgb, 6),
    }


CASES = _cases()


@pytest.mark.parametrize("case", list(CASES))
def test_every_mode_decodes_like_its_8_bit_version(case):
    build, reference, tolerance = CASES[case]
    image = build()
    out = to_rgb(image)
    assert out.mode == "RGB" and out.size == (reference.shape[1], reference.shape[0])
    diff = np.abs(np.asarray(out, dtype=np.int16) - reference.astype(np.int16))
    assert diff.max() <= tolerance, (case, image.mode, int(diff.max()))


@pytest.mark.parametrize("case", ["F in [0, 1]", "F in [0, 255]", "I;16", "I in [0, 65535]", "CMYK", "1", "P", "RGBA"])
def test_tiff_files_decode_like_their_8_bit_version(tmp_path, case):
    build, reference, tolerance = CASES[case]
    path = tmp_path / "picture.tif"
    build().save(path)
    out = np.asarray(open_image(path), dtype=np.int16)
    assert np.abs(out - reference.astype(np.int16)).max() <= tolerance


def test_a_float_tiff_in_unit_range_is_not_black(tmp_path):
    path = tmp_path / "unit.tif"
    Image.fromarray(np.full((8, 8), 0.5, np.float32), mode="F").save(path)
    assert abs(int(np.asarray(open_image(path))[0, 0, 0]) - 128) <= 1


def test_non_finite_and_out_of_range_values_are_stretched_not_lost():
    values = np.array([[-1.0, np.nan], [np.inf, 3.0]], np.float32)
    out = np.asarray(to_rgb(Image.fromarray(values, mode="F")))[..., 0]
    assert out[0, 0] == 0 and out[1, 1] == 255 and out[0, 1] == out[1, 0]


def test_transparent_pixels_composite_on_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    for mode in ("RGBA", "RGBa", "LA", "PA"):
        image = Image.fromarray(rgba, mode="RGBA").convert(mode)
        out = np.asarray(to_rgb(image))
        assert tuple(out[1, 1]) == (255, 255, 255), mode


@pytest.mark.parametrize("orientation, expected", [(1, (40, 20)), (3, (40, 20)), (6, (20, 40)), (8, (20, 40))])
def test_image_size_and_open_image_share_the_exif_frame(tmp_path, orientation, expected):
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(path, exif=exif)
    assert image_size(path) == expected
    assert open_image(path).size == expected


def test_image_size_of_a_non_image_is_one_line(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not a picture\n")
    with pytest.raises(DenseVLMError) as info:
        image_size(path)
    assert str(path) in str(info.value) and "not a readable image" in str(info.value)
    assert "\n" not in str(info.value)
