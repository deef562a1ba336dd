"""COCO run-length encoding of binary masks: the package's one encoder and decoder.

A mask ``[H, W]`` is stored as ``{"size": [H, W], "counts": str}``, the compressed RLE of
pycocotools (``maskApi.c``, ``rleToString`` / ``rleFrString``). The pixels are read in
column-major (Fortran) order and cut into runs that alternate background/foreground, starting
with background (a mask whose first pixel is foreground starts with a run of 0). The run
lengths are written as a string: from the fourth run on, each is replaced by its difference to
the run two before; each value is cut into 5-bit groups, least significant first, each written
as ``chr(48 + group)`` with bit ``0x20`` set when another group follows and bit ``0x10`` of the
last group carrying the sign.

:func:`encode_rle` and :func:`decode_rle` call pycocotools (imported on first use).
:func:`rle_counts` and :func:`rle_area` are pure Python, so the review server can check and
measure masks without numpy or pycocotools.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np

__all__ = ["encode_rle", "decode_rle", "rle_counts", "rle_area"]


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of one mask.

    Args:
        mask: ``[H, W]`` array; nonzero pixels are foreground (bool, or any integer type).

    Returns:
        ``{"size": [H, W], "counts": str}`` with plain ``int`` sizes and an ASCII ``counts``
        string, ready for JSON.

    Raises:
        ValueError: ``mask`` is not two-dimensional.
    """
    if mask.ndim != 2:
        raise ValueError(f"a mask must be [H, W], got shape {tuple(mask.shape)}")
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask != 0, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """The ``[H, W]`` bool mask of a COCO compressed RLE ``{"size": [H, W], "counts": str}``."""
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():
        # pycocotools' own numpy-2 copy-keyword notice, not something callers can act on
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode({"size": list(rle["size"]), "counts": rle["counts"].encode("ascii")}).astype(bool)


def rle_counts(counts: str) -> list[int]:
    """Run lengths of a compressed RLE ``counts`` string (see the module docstring).

    Runs alternate background/foreground, starting with background, over the pixels in
    column-major order; a well-formed mask's runs are non-negative and sum to ``H * W`` (the
    caller checks that against the size).

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
    """Foreground pixel count of a COCO compressed RLE dict (the sum of its odd runs).

    Raises:
        ValueError: malformed ``counts`` (see :func:`rle_counts`).
    """
    return sum(rle_counts(rle["counts"])[1::2])
