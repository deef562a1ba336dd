"""COCO RLE: hand-computed strings, round trips against pycocotools, malformed strings."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from densevlm.regions.rle import compress_counts, decode_rle, encode_rle, rle_area, rle_counts


def _runs_to_mask(runs: list[int], shape: tuple[int, int]) -> np.ndarray:
    """Independent decoder: alternate 0/1 runs over column-major pixels."""
    flat = np.zeros(shape[0] * shape[1], dtype=bool)
    pos = 0
    for i, run in enumerate(runs):
        flat[pos : pos + run] = bool(i % 2)
        pos += run
    assert pos == flat.size
    return flat.reshape(shape[::-1]).T


def test_hand_computed_mask():
    # column-major pixels 0,1,0 | 1,1,0 -> runs 1,1,1,2,1; the 4th and 5th are stored as
    # differences to the run two before: 2 - 1 = 1 and 1 - 1 = 0 -> "1", "1", "1", "1", "0"
    mask = np.array([[0, 1], [1, 1], [0, 0]], dtype=bool)
    rle = encode_rle(mask)
    assert rle == {"size": [3, 2], "counts": "11110"}
    assert rle_counts(rle["counts"]) == [1, 1, 1, 2, 1]
    assert rle_area(rle) == 3
    np.testing.assert_array_equal(decode_rle(rle), mask)


def test_negative_difference_uses_the_sign_bit():
    # one column 1,1,1,1,1,0,0,0,1 -> runs 0,5,3,1; the 4th is 1 - 5 = -4, one group 0b11100 = 28 -> chr(76) "L"
    mask = np.array([[1], [1], [1], [1], [1], [0], [0], [0], [1]], dtype=np.uint8)
    rle = encode_rle(mask)
    assert rle["counts"] == "053L"
    assert rle_counts("053L") == [0, 5, 3, 1]
    assert rle_area(rle) == 6
    np.testing.assert_array_equal(decode_rle(rle), mask.astype(bool))


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (64, 48), (200, 3)])
def test_round_trips_match_pycocotools(shape):
    rng = np.random.default_rng(sum(shape))
    mask = rng.random(shape) > 0.6
    mask[: shape[0] // 2, : shape[1] // 2] = True  # long runs need multi-character values
    rle = encode_rle(mask)
    reference = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle["size"] == list(shape) and all(type(v) is int for v in rle["size"])
    assert rle["counts"] == reference["counts"].decode("ascii")
    decoded = decode_rle(rle)
    assert decoded.dtype == bool
    np.testing.assert_array_equal(decoded, mask)
    np.testing.assert_array_equal(_runs_to_mask(rle_counts(rle["counts"]), shape), mask)
    assert rle_area(rle) == int(mask.sum()) == int(mask_utils.area(reference))


@pytest.mark.parametrize("value", [0, 1])
def test_constant_masks(value):
    mask = np.full((4, 6), value, dtype=bool)
    rle = encode_rle(mask)
    assert rle_counts(rle["counts"]) == ([24] if value == 0 else [0, 24])
    assert rle_area(rle) == 24 * value
    np.testing.assert_array_equal(decode_rle(rle), mask)


@pytest.mark.parametrize("counts, message", [("0a~", "invalid character"), ("X", "truncated")])
def test_malformed_strings_raise(counts, message):
    with pytest.raises(ValueError, match=message):
        rle_counts(counts)


def test_encode_needs_a_2d_mask():
    with pytest.raises(ValueError, match=r"must be \[H, W\]"):
        encode_rle(np.zeros((2, 3, 4), dtype=bool))


def test_a_crop_encodes_as_the_full_mask_it_is_placed_in():
    rng = np.random.default_rng(0)
    for _ in range(400):
        height, width = (int(v) for v in rng.integers(1, 10, 2))
        h, w = int(rng.integers(1, height + 1)), int(rng.integers(1, width + 1))
        top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        crop = rng.random((h, w)) < rng.choice([0.0, 0.3, 0.8, 1.0])  # empty, sparse, dense and full crops
        full = np.zeros((height, width), dtype=bool)
        full[top: top + h, left: left + w] = crop
        assert encode_rle(crop, size=(height, width), offset=(top, left)) == encode_rle(full)
    column = np.ones((5, 1), dtype=bool)  # full-height columns: one run across them
    assert encode_rle(np.ones((5, 3), bool), size=(5, 4), offset=(0, 1)) == encode_rle(np.pad(column.repeat(3, 1), ((0, 0), (1, 0))))
    with pytest.raises(ValueError, match="does not fit"):
        encode_rle(np.ones((3, 3), bool), size=(4, 4), offset=(2, 0))


def test_compress_counts_matches_the_encoder_of_the_full_mask():
    rng = np.random.default_rng(3)
    masks = [rng.random((7, 5)) < p for p in (0.0, 0.3, 0.9)]
    runs = []
    for mask in masks:
        flat = mask.T.ravel().astype(np.int8)  # column-major
        bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
        lengths = np.diff(bounds).tolist()
        runs.append(([0] if flat[0] else []) + lengths)  # runs start with 0s
    assert compress_counts(runs, 7, 5) == [encode_rle(m)["counts"] for m in masks]
    assert compress_counts([], 7, 5) == []
