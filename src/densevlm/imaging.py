"""Image decoding and the letterbox size policy shared by every model.

Images are read as RGB whatever is on disk (grayscale, palette, RGBA, CMYK, 16-bit), with the
EXIF orientation applied; of an animated or multi-page file (GIF, TIFF, PNG, WebP) the first frame,
with a warning. The letterbox policy resizes the longest side to ``size`` and pads
right and bottom up to a multiple of the patch size (or to a square), so that input pixels map
to original pixels by a single scale factor.
"""

from __future__ import annotations

import functools
import logging
import struct
import sys
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Optional, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from densevlm.errors import DenseVLMError

if TYPE_CHECKING:  # torch is imported on use: the review server reads image sizes without it
    import torch

__all__ = ["IMAGE_SUFFIXES", "open_image", "image_size", "to_rgb", "Letterbox", "letterbox", "letterbox_array", "normalize",
           "normalize_array", "encode_png", "check_input_size", "check_image_size", "plan_letterbox", "MIN_SIDE",
           "MAX_INPUT_SIZE"]

log = logging.getLogger(__name__)

# .gif: the first frame of an animated GIF is the image
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")

# Decompression-bomb guard: allow large factory photos (e.g. 100 MP) but not absurd ones.
Image.MAX_IMAGE_PIXELS = 200_000_000


_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map one high-depth channel to 0..255 by its range.

    16-bit modes (``I;16*``) are scaled by 65535. ``F`` values inside [0, 1] are scaled by 255,
    values inside [0, 255] are kept; ``I`` values inside [0, 255] are kept and values inside
    [0, 65535] are scaled by 65535. Anything else (negative values, larger ranges) is stretched
    from its minimum to its maximum. NaN and infinities become 0.
    """
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if mode.startswith("I;16"):
        offset, span = 0.0, 65535.0
    elif lo >= 0.0 and hi <= 1.0 and mode == "F":
        offset, span = 0.0, 1.0
    elif lo >= 0.0 and hi <= 255.0:
        offset, span = 0.0, 255.0
    elif lo >= 0.0 and hi <= 65535.0 and mode == "I":
        offset, span = 0.0, 65535.0
    else:
        offset, span = lo, max(hi - lo, 1e-12)
    return np.clip(np.rint((arr - offset) / span * 255.0), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    16-bit, 32-bit integer and float images are scaled by their range (see :func:`_to_uint8`:
    a float image holding [0, 1] is not black); transparent pixels (``RGBA``, ``LA``, ``PA``,
    premultiplied ``RGBa``/``La``, palette transparency) are composited on white; ``1``, ``L``,
    ``P``, ``CMYK``, ``YCbCr``, ``HSV``, ``LAB`` go through Pillow's conversion.
    """
    if image.mode == "RGB":
        return image
    if image.mode in _HIGH_DEPTH_MODES:
        return Image.fromarray(_to_uint8(np.asarray(image), image.mode), mode="L").convert("RGB")
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("LA" if image.mode == "La" else image.mode).convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image file in the frame every command uses (EXIF orientation
    applied), read from the header without decoding the pixels.

    Raises:
        DenseVLMError: the file is missing or not an image.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = im.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise DenseVLMError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DenseVLMError(f"{path}: not a readable image ({_first_line(e)})") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:120] if text else type(e).__name__


def open_image(path: str | Path | BinaryIO, name: Optional[str] = None, orientation: bool = True) -> Image.Image:
    """Read an image as RGB with its EXIF orientation applied (the frame of :func:`image_size`); of
    an animated or multi-page file, the first frame, with a warning line naming the file.

    Args:
        path: a file path, or a binary file object (e.g. a member of a tar shard).
        name: what messages call the image (default ``path``).
        orientation: apply the EXIF orientation; False keeps the stored pixel frame (the frame
            of COCO annotations, see :class:`~densevlm.data.panoptic.PanopticDataset`).

    Raises:
        DenseVLMError: the file is missing, not an image, truncated or too large.
    """
    label = name or str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if hasattr(path, "read") else Path(path)) as im:
                # an MPO (a camera's JPEG) holds previews of the same picture as further frames
                if getattr(im, "is_animated", False) and im.format != "MPO":
                    log.warning("%s: %d frames; using the first", label, im.n_frames)
                im.load()
                if orientation:
                    im = ImageOps.exif_transpose(im)
                return to_rgb(im)
    except FileNotFoundError:
        raise DenseVLMError(f"{label}: image file not found") from None
    except (UnidentifiedImageError, OSError, EOFError, SyntaxError, ValueError, TypeError, IndexError, KeyError,
            struct.error) as e:  # what Pillow raises for damaged files
        raise DenseVLMError(f"{label}: not a readable image ({_first_line(e)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DenseVLMError(f"{label}: image is too large (over {Image.MAX_IMAGE_PIXELS:,} pixels)") from None


def _deflate(data: np.ndarray, level: int) -> bytes:
    """The zlib stream of ``data``: levels 1-3 by ISA-L (``isal``, in the ``runtime`` extra) where
    it is installed, about 4.5x faster than zlib's level 1 on a 64 px scene's overlay (0.5 against
    2.4 ms, 10 % larger: BENCHMARKS.md), else by :func:`zlib.compress`; both release the GIL."""
    fast = _isal_zlib() if 1 <= level <= 3 else None
    return (fast or zlib).compress(data, level)


@functools.lru_cache(maxsize=1)
def _isal_zlib():
    """``isal.isal_zlib``, or None where ``isal`` is not installed (looked up once)."""
    try:
        from isal import isal_zlib
    except ImportError:
        return None
    return isal_zlib


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(pixels: np.ndarray, level: int = 1) -> bytes:
    """The PNG file of ``pixels``: ``[H, W]`` uint8 or uint16 (8- or 16-bit grayscale) or ``[H, W, 3]``
    uint8 (RGB), every row "Up"-filtered, deflated at zlib ``level`` (0-9; 1-3 by ISA-L where
    installed, see :func:`_deflate`: other bytes, the same pixels).

    Reads back (Pillow, any PNG reader) as exactly ``pixels`` (modes ``L``, ``I;16``, ``RGB``). Unlike
    ``Image.save(format="PNG")``, which holds the GIL while it deflates, the deflate runs in
    :func:`_deflate`, which releases it, so threads writing files overlap. Format: W3C PNG
    (Third Edition), 8-bit or 16-bit truecolour or greyscale, not interlaced; filter type 2 (Up),
    the difference to the row above (a row of zeros above the first), byte by byte; 16-bit
    samples big-endian.

    Raises:
        DenseVLMError: another shape or dtype.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim == 2 and pixels.dtype in (np.uint8, np.uint16):
        colour_type = 0
    elif pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.dtype == np.uint8:
        colour_type = 2
    else:
        raise DenseVLMError(f"a PNG holds [H, W] uint8/uint16 or [H, W, 3] uint8 pixels, got {pixels.dtype} "
                            f"{tuple(pixels.shape)}")
    height, width = pixels.shape[:2]
    depth = 8 * pixels.dtype.itemsize
    rows = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder(">")).view(np.uint8).reshape(height, -1)
    filtered = np.empty((height, rows.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = 2
    filtered[:1, 1:] = rows[:1]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", _deflate(filtered, level))
            + _png_chunk(b"IEND", b""))


@dataclass(frozen=True)
class Letterbox:
    """How an original image maps into a model input, and back.

    The resized content sits at the input's top-left corner (padding is right and bottom), so
    the two pixel frames differ by the scale alone, with no offset. Coordinates are continuous,
    pixel ``i`` covering ``[i, i + 1)`` in both frames. Every conversion between original and
    input pixels goes through :meth:`to_input`, :meth:`to_original` and :meth:`masks_to_input`.

    Attributes:
        scale: input pixels per original pixel (``x_input = x_original * scale``).
        width, height: size of the resized image content inside the input, in input pixels.
        input_width, input_height: size of the padded input.
        original_width, original_height: size of the original image.
    """

    scale: float
    width: int
    height: int
    input_width: int
    input_height: int
    original_width: int
    original_height: int

    def to_input(self, coords: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Original-pixel coordinates -> input-pixel coordinates: ``coords * scale``.

        Args:
            coords: ``[..., 4]`` XYXY boxes (e.g. ``[N, 4]``) or ``[..., 2]`` XY points in
                original pixels; a torch tensor, a numpy array or a nested sequence (read as a
                float64 array).

        Returns:
            The same shape in input pixels: a tensor on the same device for a tensor, else a
            numpy array; floating-point input keeps its dtype. Boxes are not clipped.

        Raises:
            DenseVLMError: the last dimension is not 4 (boxes) or 2 (points).
        """
        return _coords(coords) * self.scale

    def to_original(self, coords: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Input-pixel coordinates -> original-pixel coordinates: ``coords / scale``.

        The inverse of :meth:`to_input` (same arguments, returns and errors). Coordinates in
        the padding map beyond the original image; clip them if needed.
        """
        return _coords(coords) / self.scale

    def masks_to_input(self, masks: torch.Tensor) -> torch.Tensor:
        """Original-size masks -> input-size masks, laid out as the image is.

        Each mask is area-resized to the content size (so a value is the covered fraction of
        an input pixel) and zero-padded right and bottom to the input size.

        Args:
            masks: ``[N, original_height, original_width]``, bool or float in ``[0, 1]``.

        Returns:
            ``[N, input_height, input_width]`` float32 on the masks' device.

        Raises:
            DenseVLMError: the masks are not ``[N, original_height, original_width]``.
        """
        if masks.ndim != 3 or tuple(masks.shape[1:]) != (self.original_height, self.original_width):
            raise DenseVLMError(
                f"masks of shape {tuple(masks.shape)} do not match the original image "
                f"({self.original_height}x{self.original_width})"
            )
        import torch

        resized = torch.nn.functional.interpolate(masks.float()[:, None], size=(self.height, self.width), mode="area")
        out = torch.zeros(masks.shape[0], self.input_height, self.input_width, device=masks.device)
        out[:, : self.height, : self.width] = resized[:, 0]
        return out


def _coords(coords: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """``coords`` as a tensor or array of ``[..., 4]`` boxes or ``[..., 2]`` points."""
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported; do not import it here
    if not isinstance(coords, np.ndarray) and not (torch is not None and isinstance(coords, torch.Tensor)):
        coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim == 0 or coords.shape[-1] not in (2, 4):
        raise DenseVLMError(f"expected [..., 4] XYXY boxes or [..., 2] XY points, got shape {tuple(coords.shape)}")
    return coords


def _round_up(x: int, multiple: int) -> int:
    return ((x + multiple - 1) // multiple) * multiple


MAX_INPUT_SIZE = 4096
"""Largest model input side (pixels) a command accepts: 65,536 tokens at patch 16, past what a
dense ViT's attention fits in memory; a larger ``--size`` is a typo, not a wish."""


def check_input_size(size: int, patch: int) -> None:
    """Raise one line unless ``size`` (a model's longest input side asked for by ``--size``, pixels) is at
    least one ``patch`` (below it the whole image is one token and every output is noise) and at most
    :data:`MAX_INPUT_SIZE`."""
    if size < patch:
        raise DenseVLMError(f"input size {size} is smaller than one patch of the model ({patch} px); "
                            f"use --size {patch} or more")
    if size > MAX_INPUT_SIZE:
        raise DenseVLMError(f"input size {size} is above the largest one accepted ({MAX_INPUT_SIZE} px)")


MIN_SIDE = 8
"""Fewest pixels an image needs on each side, as it is and inside the model input: fewer is a file
or camera fault (a 1x1 image) or a strip the model would see as a row or two of pixels."""


def check_image_size(width: int, height: int, size: int) -> None:
    """Refuse an image of ``width`` x ``height`` px that is, or becomes at longest side ``size``,
    under :data:`MIN_SIDE` pixels on a side.

    Raises:
        DenseVLMError: one line without the file name (callers add it).
    """
    if min(width, height) < MIN_SIDE:
        raise DenseVLMError(f"image is {width}x{height} px, too small to recognise anything "
                            f"(at least {MIN_SIDE} px on each side)")
    scale = size / max(width, height)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    if min(w, h) < MIN_SIDE:
        raise DenseVLMError(f"image is {width}x{height} px, too long and thin for a {size} px input (it would be "
                            f"{w}x{h} px); cut it into pieces or pass a larger --size")


def plan_letterbox(width: int, height: int, size: int, multiple: int, square: bool = False) -> Letterbox:
    """Compute the letterbox geometry for an image of ``width`` x ``height`` pixels."""
    scale = size / max(width, height)
    w = max(1, round(width * scale))
    h = max(1, round(height * scale))
    if square:
        side = _round_up(size, multiple)
        iw = ih = side
    else:
        iw, ih = _round_up(w, multiple), _round_up(h, multiple)
    return Letterbox(scale, w, h, iw, ih, width, height)


@functools.lru_cache(maxsize=16)
def _normalize_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``[3, 256]`` float32: ``(v / 255 - mean[c]) / std[c]`` for every byte value ``v`` of channel
    ``c``, each operation in float32 (cached per normalisation, read-only)."""
    x = np.arange(256, dtype=np.float32) / np.float32(255.0)
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1)
    table = (x[None, :] - m) / s
    table.setflags(write=False)
    return table


def normalize_array(array: np.ndarray, mean: Sequence[float], std: Sequence[float],
                    out: Optional[np.ndarray] = None) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB -> ``[3, H, W]`` float32 array normalised with ``mean`` / ``std``:
    ``(v / 255 - mean[c]) / std[c]`` in float32.

    A byte has 256 values, so the formula is worked out once per value and channel
    (:func:`_normalize_table`) and each pixel looks its value up: the same float32 results as the
    formula on the whole image, in one pass instead of five.

    Args:
        out: ``[3, H, W]`` float32 array (or view) to write into; a new one when None.
    """
    pixels = np.asarray(array, dtype=np.uint8)
    table = _normalize_table(tuple(float(v) for v in mean), tuple(float(v) for v in std))
    if out is None:
        out = np.empty((3,) + pixels.shape[:2], dtype=np.float32)
    for c in range(3):
        np.take(table[c], pixels[..., c], out=out[c], mode="clip")  # uint8 indices: always in range
    return out


def normalize(array: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """:func:`normalize_array` as a torch tensor (``[3, H, W]`` float32)."""
    import torch

    return torch.from_numpy(normalize_array(array, mean, std))


# PIL's reducing_gap for downscales (letterbox_array's docstring).
_REDUCING_GAP = 3.0


def letterbox_array(
    image: Image.Image,
    size: int,
    multiple: int,
    mean: Sequence[float],
    std: Sequence[float],
    square: bool = False,
) -> tuple[np.ndarray, Letterbox]:
    """Resize the longest side to ``size`` (bicubic), normalise, pad right/bottom with zeros.

    A downscale by 6x or more first box-reduces by the integer factor ``floor(scale / 3)``, which
    leaves at least 3x the target size (PIL's ``reducing_gap=3``), then resamples bicubically: 4x faster for a
    640x480 photo to 64 px (0.37 vs 1.46 ms), 2x for 4000x3000 to 448 (35 vs 69 ms). Against the
    full bicubic filter: at most 2 grey levels off on the benchmark photo (mean 0.19), at most 6
    (mean 0.7) on random noise upscaled 8x, a worst case (``tests/imaging/test_letterbox.py``).

    The one letterbox of the package, in numpy (the runtime without PyTorch uses it as is);
    :func:`letterbox` wraps the result in a tensor.

    Args:
        image: any PIL image (converted to RGB).
        size: target length of the longest side, in pixels.
        multiple: pad each side up to a multiple of this (the patch size).
        square: pad to ``size x size`` (rounded up to ``multiple``) instead.

    Returns:
        ``([3, H, W] float32 array, Letterbox)``; padding is 0 after normalisation (the mean colour).

    Raises:
        DenseVLMError: ``size`` or ``multiple`` is not positive, or the image is too small or thin
            for ``size`` (:func:`check_image_size`).
    """
    if size <= 0 or multiple <= 0:
        raise DenseVLMError(f"letterbox size {size} and multiple {multiple} must be positive")
    check_image_size(image.width, image.height, size)
    image = to_rgb(image)
    plan = plan_letterbox(image.width, image.height, size, multiple, square)
    if (plan.width, plan.height) != image.size:
        image = image.resize((plan.width, plan.height), Image.BICUBIC, reducing_gap=_REDUCING_GAP)
    out = np.zeros((3, plan.input_height, plan.input_width), dtype=np.float32)
    normalize_array(np.asarray(image), mean, std, out=out[:, : plan.height, : plan.width])
    return out, plan


def letterbox(
    image: Image.Image,
    size: int,
    multiple: int,
    mean: Sequence[float],
    std: Sequence[float],
    square: bool = False,
) -> tuple[torch.Tensor, Letterbox]:
    """:func:`letterbox_array` with the input as a ``[3, H, W]`` torch tensor (same arguments and errors)."""
    import torch

    array, plan = letterbox_array(image, size, multiple, mean, std, square)
    return torch.from_numpy(array), plan
