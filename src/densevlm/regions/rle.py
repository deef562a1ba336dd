"""COCO run-length encoding of binary masks: the package's one encoder and decoder.

A mask ``[H, W]`` is ``{"size": [H, W], "counts": str}``, pycocotools' compressed RLE: runs of
alternating 0/1 pixels in column-major order, starting with 0s; from the fourth run on each is
stored as the difference to the run two before, in 5-bit groups ``chr(48 + group)`` (bit 0x20:
more groups follow, bit 0x10 of the last: sign), as in ``rleToString`` of ``maskApi.c``.
:func:`rle_counts` and :func:`rle_area` are pure Python: reading this module loads neither numpy
nor pycocotools (the review server checks and measures masks without them).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

if TYPE_CHECKING:
    import numpy as np

__all__ = ["encode_rle", "compress_counts", "decode_rle", "rle_counts", "rle_area"]


def encode_rle(mask: np.ndarray, size: Optional[tuple[int, int]] = None, offset: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """``{"size": [H, W], "counts": str}`` (plain ints, ready for JSON) of an ``[H, W]`` mask (nonzero = in).

    Args:
        mask: the mask, or with ``size`` a crop of it: ``[h, w]`` pixels at rows ``offset[0]:+h``,
            columns ``offset[1]:+w`` of an ``[H, W] = size`` mask that is 0 elsewhere. The runs of a
            crop are found in the crop (cost in crop pixels, not image pixels) and compressed by
            pycocotools as it compresses its own; the string is the one ``encode`` gives for the full mask.

    Raises:
        ValueError: ``mask`` is not two-dimensional, or the crop does not fit in ``size``.
    """
    if mask.ndim != 2:
        raise ValueError(f"a mask must be [H, W], got shape {tuple(mask.shape)}")
    import numpy as np
    from pycocotools import mask as mask_utils

    if size is None:
        rle = mask_utils.encode(np.asfortranarray(mask != 0, dtype=np.uint8))
        return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
    height, width = int(size[0]), int(size[1])
    top, left = int(offset[0]), int(offset[1])
    if top < 0 or left < 0 or top + mask.shape[0] > height or left + mask.shape[1] > width:
        raise ValueError(f"a {mask.shape[0]}x{mask.shape[1]} crop at {offset} does not fit in {height}x{width}")
    # column-major runs: per crop column, the rows where the mask switches on (+1) and off (-1)
    padded = np.zeros((mask.shape[1], mask.shape[0] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask.T != 0
    column, row = np.nonzero(np.diff(padded, axis=1))
    flat = (column + left).astype(np.int64) * height + row + top  # starts and ends, alternating
    starts, ends = flat[0::2], flat[1::2]
    keep = np.ones(len(starts) + 1, dtype=bool)
    keep[1:-1] = starts[1:] != ends[:-1]  # a run down a full-height crop goes on in the next column
    bounds = np.concatenate([[0], np.stack([starts[keep[:-1]], ends[keep[1:]]], axis=1).ravel(), [height * width]])
    counts = np.diff(bounds)
    if len(counts) > 1 and counts[-1] == 0:
        counts = counts[:-1]
    return {"size": [height, width], "counts": compress_counts([counts], height, width)[0]}


def compress_counts(counts: Sequence[Sequence[int] | np.ndarray], height: int, width: int) -> list[str]:
    """The compressed ``counts`` strings of uncompressed COCO RLEs of ``[height, width]`` masks.

    Args:
        counts: per mask, its column-major run lengths (0s first; a trailing run of 0s may be left
            out), as a list or a 1-D integer array (which pycocotools reads without a Python loop).

    Returns:
        One string per mask, as pycocotools writes it (its ``frPyObjects`` does the compression).
    """
    from pycocotools import mask as mask_utils

    if not counts:
        return []
    objects = [{"size": [height, width], "counts": c} for c in counts]
    return [rle["counts"].decode("ascii") for rle in mask_utils.frPyObjects(objects, height, width)]


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """The ``[H, W]`` bool mask of a COCO compressed RLE ``{"size": [H, W], "counts": str}``."""
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():
        # pycocotools' own numpy-2 copy-keyword notice, not something callers can act on
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode({"size": list(rle["size"]), "counts": rle["counts"].encode("ascii")}).astype(bool)


def rle_counts(counts: str) -> list[int]:
    """Run lengths (0s first, column-major) of a ``counts`` string; the caller checks they sum to ``H * W``.

    Raises:
        ValueError: a character outside ``0``..``o`` or a string that ends inside a value.
    """
    runs: list[int] = []
    pos = 0
    while pos < len(counts):
        value = 0
        shift = 0
        more = True
        while more:
            if pos >= len(counts):
                raise ValueError("truncated RLE string")
            chunk = ord(counts[pos]) - 48
            if chunk < 0 or chunk > 63:
                raise ValueError(f"invalid character {counts[pos]!r} in RLE string")
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            pos += 1
            shift += 5
            if not more and chunk & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def rle_area(rle: Mapping[str, Any]) -> int:
    """Foreground pixel count of an RLE dict (the sum of its odd runs); ValueError as :func:`rle_counts`."""
    return sum(rle_counts(rle["counts"])[1::2])
