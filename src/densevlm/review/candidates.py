"""Reading and checking a candidates JSONL file (``densevlm retrieve``) for the review store.

The first line is a header (``kind: header``, version 1, the teacher, the images directory and
the vocabulary); every other line is one region: image file relative to the images directory,
its width and height, a box (XYXY, original pixels), an optional COCO compressed RLE mask, the
teacher's top-k categories with probabilities, confidence, thing flag and kept flag. Every
problem is one :class:`~densevlm.errors.DenseVLMError` line naming the file and line number.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Optional, Sequence

from densevlm.errors import DenseVLMError, nearest_names
from densevlm.fileio import decode_utf8
from densevlm.regions.rle import rle_counts

__all__ = [
    "MAX_CANDIDATES",
    "CandidateRegion",
    "CandidatesFile",
    "CandidatesHeader",
    "HeaderClass",
    "clean_name",
    "read_candidates",
]

logger = logging.getLogger(__name__)

MAX_CANDIDATES = 5


# ----------------------------------------------------------------------------------------------
# Reading and checking a candidates JSONL file


@dataclass(frozen=True)
class HeaderClass:
    synonyms: tuple[str, ...]
    thing: bool


@dataclass(frozen=True)
class CandidatesHeader:
    teacher: Optional[str]
    images: Optional[str]
    classes: tuple[HeaderClass, ...]
    raw: dict


@dataclass(frozen=True)
class CandidateRegion:
    line: int
    key: str
    image: str
    width: int
    height: int
    box: tuple[float, float, float, float]
    mask: Optional[dict]
    candidates: tuple[tuple[int, float], ...]  # (header class index, prob)
    confidence: float
    thing: bool
    kept: bool


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def clean_name(name: str) -> str:
    """A class name with runs of whitespace collapsed to one space."""
    return " ".join(name.split())


def _parse_header_vocabulary(vocab: Any, where: str) -> tuple[HeaderClass, ...]:
    from densevlm.vocab.vocabulary import Vocabulary

    if not isinstance(vocab, dict):
        raise DenseVLMError(f"{where}: header 'vocabulary' must be an object with 'things' and 'stuff' lists")
    sections = []
    for section in ("things", "stuff"):
        entries = vocab.get(section, [])
        if not isinstance(entries, list):
            raise DenseVLMError(f"{where}: header vocabulary '{section}' must be a list, got {_short(entries)}")
        for entry in entries:
            names = [entry] if isinstance(entry, str) else entry
            if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
                raise DenseVLMError(
                    f"{where}: header vocabulary '{section}' entry {_short(entry)} must be a name or a list of names"
                )
        sections.append(entries)
    defects = vocab.get("defects", [])
    if not isinstance(defects, list) or not all(isinstance(n, str) for n in defects):
        raise DenseVLMError(f"{where}: header vocabulary 'defects' must be a list of thing names, got {_short(defects)}")
    try:
        parsed = Vocabulary.from_lists(*sections, defects=defects)
    except DenseVLMError as e:
        raise DenseVLMError(f"{where}: header {e}") from None
    return tuple(HeaderClass(syn, thing) for syn, thing in zip(parsed.synonyms, parsed.is_thing))


def _parse_header(obj: Any, where: str) -> CandidatesHeader:
    if not isinstance(obj, dict) or obj.get("kind") != "header":
        raise DenseVLMError(f"{where}: the first line must be the header ({{\"kind\": \"header\", ...}})")
    if obj.get("version") != 1:
        raise DenseVLMError(f"{where}: unsupported candidates version {_short(obj.get('version'))}; this densevlm reads version 1")
    if "vocabulary" not in obj:
        raise DenseVLMError(f"{where}: header is missing key 'vocabulary'")
    teacher = obj.get("teacher")
    if teacher is not None and not isinstance(teacher, str):
        raise DenseVLMError(f"{where}: header 'teacher' must be a string, got {_short(teacher)}")
    images = obj.get("images")
    if images is not None and not isinstance(images, str):
        raise DenseVLMError(f"{where}: header 'images' must be a directory path string, got {_short(images)}")
    return CandidatesHeader(teacher, images, _parse_header_vocabulary(obj["vocabulary"], where), obj)


def _check_mask(mask: Any, width: int, height: int, where: str) -> Optional[dict]:
    if mask is None:
        return None
    if not isinstance(mask, dict) or set(mask) != {"size", "counts"}:
        raise DenseVLMError(f"{where}: 'mask' must be null or a COCO RLE object {{\"size\": [h, w], \"counts\": \"...\"}}")
    size = mask["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(s) for s in size)):
        raise DenseVLMError(f"{where}: mask 'size' must be [height, width], got {_short(size)}")
    if size != [height, width]:
        raise DenseVLMError(f"{where}: mask size {size} does not match the image size [height, width] = [{height}, {width}]")
    counts = mask["counts"]
    if not isinstance(counts, str):
        raise DenseVLMError(f"{where}: mask 'counts' must be a compressed RLE string, got {_short(counts)}")
    try:
        runs = rle_counts(counts)
    except ValueError as e:
        raise DenseVLMError(f"{where}: mask 'counts' is not a valid compressed RLE ({e})") from None
    if any(r < 0 for r in runs) or sum(runs) != width * height:
        raise DenseVLMError(f"{where}: mask 'counts' do not decode to {height}x{width} pixels")
    return {"size": [height, width], "counts": counts}


def _parse_region(
    obj: Any, where: str, lineno: int, names: dict[str, int], header: CandidatesHeader
) -> CandidateRegion:
    if not isinstance(obj, dict):
        raise DenseVLMError(f"{where}: a region line must be a JSON object, got {_short(obj)}")
    if obj.get("kind") != "region":
        raise DenseVLMError(f"{where}: expected \"kind\": \"region\", got {_short(obj.get('kind'))}")
    for key in ("id", "image", "width", "height", "box", "mask", "candidates", "confidence", "thing", "kept"):
        if key not in obj:
            raise DenseVLMError(f"{where}: region is missing key '{key}'")
    key = obj["id"]
    if not isinstance(key, str) or not key.strip():
        raise DenseVLMError(f"{where}: region 'id' must be a non-empty string, got {_short(key)}")
    image = obj["image"]
    if not isinstance(image, str) or not image.strip():
        raise DenseVLMError(f"{where}: 'image' must be a file name relative to the images directory, got {_short(image)}")
    parts = PurePosixPath(image.replace("\\", "/")).parts
    if image.startswith(("/", "\\")) or (len(image) > 1 and image[1] == ":") or ".." in parts:
        raise DenseVLMError(f"{where}: image '{image}' must be a path inside the images directory (no absolute path, no '..')")
    width, height = obj["width"], obj["height"]
    if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
        raise DenseVLMError(f"{where}: 'width' and 'height' must be positive integers, got {_short(width)} and {_short(height)}")
    box = obj["box"]
    if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
        raise DenseVLMError(f"{where}: 'box' must be [x1, y1, x2, y2] (4 numbers, pixels), got {_short(box)}")
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 < x1:
        raise DenseVLMError(f"{where}: box {_short(box)} is inverted (x2 < x1)")
    if y2 < y1:
        raise DenseVLMError(f"{where}: box {_short(box)} is inverted (y2 < y1)")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise DenseVLMError(f"{where}: box {_short(box)} lies outside the {width}x{height} image")
    mask = _check_mask(obj["mask"], width, height, where)
    raw_candidates = obj["candidates"]
    if not isinstance(raw_candidates, list) or not raw_candidates:
        raise DenseVLMError(f"{where}: 'candidates' must be a non-empty list, got {_short(raw_candidates)}")
    candidates: list[tuple[int, float]] = []
    for cand in raw_candidates:
        if not isinstance(cand, dict) or not {"category", "prob"} <= set(cand):
            raise DenseVLMError(f"{where}: each candidate needs 'category' and 'prob', got {_short(cand)}")
        category, prob = cand["category"], cand["prob"]
        if not isinstance(category, str):
            raise DenseVLMError(f"{where}: candidate 'category' must be a string, got {_short(category)}")
        if not _is_number(prob) or not 0.0 <= prob <= 1.0:
            raise DenseVLMError(f"{where}: candidate '{category}' has prob {_short(prob)}; it must be a number in [0, 1]")
        index = names.get(clean_name(category).lower())
        if index is None:
            hint = nearest_names(category, [c.synonyms[0] for c in header.classes])
            raise DenseVLMError(
                f"{where}: unknown category '{category}' (not in the header vocabulary"
                + (f"; did you mean {hint}?)" if hint else ")")
            )
        thing_flag = cand.get("thing")
        if thing_flag is not None and thing_flag is not header.classes[index].thing:
            section = "things" if header.classes[index].thing else "stuff"
            raise DenseVLMError(f"{where}: candidate '{category}' has \"thing\": {_short(thing_flag)} but the header lists it under {section}")
        if candidates and prob > candidates[-1][1] + 1e-9:
            raise DenseVLMError(f"{where}: candidates are not sorted by prob, descending")
        if any(index == c[0] for c in candidates):
            raise DenseVLMError(f"{where}: category '{category}' is a candidate twice")
        candidates.append((index, float(prob)))
    confidence = obj["confidence"]
    if not _is_number(confidence) or not 0.0 <= confidence <= 1.0:
        raise DenseVLMError(f"{where}: 'confidence' must be a number in [0, 1], got {_short(confidence)}")
    for flag in ("thing", "kept"):
        if not isinstance(obj[flag], bool):
            raise DenseVLMError(f"{where}: '{flag}' must be true or false, got {_short(obj[flag])}")
    return CandidateRegion(
        line=lineno,
        key=key,
        image=str(PurePosixPath(*parts)),
        width=width,
        height=height,
        box=(x1, y1, x2, y2),
        mask=mask,
        candidates=tuple(candidates[:MAX_CANDIDATES]),
        confidence=float(confidence),
        thing=obj["thing"],
        kept=obj["kept"],
    )


def read_candidates(path: str | Path) -> tuple[CandidatesHeader, list[CandidateRegion]]:
    """Parse and check a candidates JSONL file; any problem is a one-line DenseVLMError with the line number."""
    path = Path(path)
    real = path.resolve().name  # a link to it too
    if real.lower().endswith(".partial"):  # retrieval.candidates.partial_path
        raise DenseVLMError(f"{path}: the unfinished file of an interrupted `densevlm retrieve`; finish it with "
                            f"the same command and --resume, then use {real[:-len('.partial')]}")
    try:
        text = decode_utf8(path.read_bytes(), path)
    except FileNotFoundError:
        raise DenseVLMError(f"{path}: candidates file not found") from None
    except IsADirectoryError:
        raise DenseVLMError(f"{path}: is a directory, not a candidates JSONL file") from None
    except OSError as e:
        raise DenseVLMError(f"{path}: cannot read candidates file ({e.strerror})") from None
    header: Optional[CandidatesHeader] = None
    names: dict[str, int] = {}
    regions: list[CandidateRegion] = []
    first_line: dict[str, int] = {}
    truncated = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DenseVLMError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        except (ValueError, RecursionError) as e:  # a number past 4300 digits, nesting past the stack
            raise DenseVLMError(f"{where}: not usable JSON ({str(e).splitlines()[0][:80] or type(e).__name__})") from None
        if header is None:
            header = _parse_header(obj, where)
            for index, cls in enumerate(header.classes):
                for name in cls.synonyms:
                    names[name.lower()] = index
            continue
        region = _parse_region(obj, where, lineno, names, header)
        if region.key in first_line:
            raise DenseVLMError(f"{where}: duplicate region id '{region.key}' (first on line {first_line[region.key]})")
        first_line[region.key] = lineno
        if len(obj["candidates"]) > MAX_CANDIDATES:
            truncated += 1
        regions.append(region)
    if header is None:
        raise DenseVLMError(f"{path}: candidates file is empty (expected a header line and region lines)")
    if truncated:
        logger.warning("%s: %d regions have more than %d candidates; only the top %d are kept", path, truncated, MAX_CANDIDATES, MAX_CANDIDATES)
    return header, regions


def _resolve_images_dir(path: Path, header: CandidatesHeader, images_dir: str | Path | None) -> Path:
    if images_dir is not None:
        root = Path(images_dir)
        source = "--images"
    elif header.images:
        root = Path(header.images)
        if not root.is_absolute():
            root = path.parent / root
        source = f"the header of {path}"
    else:
        raise DenseVLMError(f"{path}: the header has no 'images' directory; pass --images DIR")
    if not root.is_dir():
        raise DenseVLMError(f"{root}: images directory (from {source}) not found")
    return root.resolve()


def _check_images(path: Path, root: Path, regions: Sequence[CandidateRegion]) -> dict[str, tuple[int, int]]:
    """Read each image's header once; its size in the EXIF-oriented frame (the one ``retrieve``
    and ``segment`` use) must match the regions' width and height."""
    from densevlm.imaging import image_size

    sizes: dict[str, tuple[int, int]] = {}
    for region in regions:
        if region.image not in sizes:
            file = root / region.image
            if not file.is_file():
                hint = f"; pass --images {root / 'images'}" if (root / "images" / region.image).is_file() else ""
                raise DenseVLMError(f"{path}:{region.line}: image '{region.image}' not found in {root}{hint}")
            try:
                sizes[region.image] = image_size(file)
            except DenseVLMError:
                raise DenseVLMError(f"{path}:{region.line}: image '{region.image}' is not a readable image file") from None
        width, height = sizes[region.image]
        if (region.width, region.height) != (width, height):
            raise DenseVLMError(
                f"{path}:{region.line}: width x height {region.width}x{region.height} does not match "
                f"image '{region.image}' ({width}x{height})"
            )
    return sizes


@dataclass(frozen=True)
class CandidatesFile:
    """A checked candidates file: its regions, the resolved images directory and image sizes (w, h)."""

    path: Path
    header: CandidatesHeader
    regions: list[CandidateRegion]
    root: Path
    sizes: dict[str, tuple[int, int]]

    @classmethod
    def load(cls, candidates_path: str | Path, images_dir: str | Path | None) -> "CandidatesFile":
        path = Path(candidates_path)
        header, regions = read_candidates(path)
        root = _resolve_images_dir(path, header, images_dir)
        return cls(path, header, regions, root, _check_images(path, root, regions))
