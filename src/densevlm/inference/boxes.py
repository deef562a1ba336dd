"""Boxes to classify instead of regions: checking them and reading ``--boxes`` files.

Boxes are XYXY in original pixels of the EXIF-oriented image, continuous coordinates (pixel
``i`` covers ``[i, i + 1)``), so a box may end exactly at the image width or height. A box that
reaches at most :data:`EDGE_TOLERANCE` (1 px) past an edge is clipped to the image with a warning
(annotation tools round outward); one that reaches further was drawn for another image size and is
refused. A boxes file is one of:

* COCO style: ``{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1,
  "bbox": [x, y, width, height]}]}`` (an annotation may name ``"file_name"`` directly);
* a list: ``[{"image": "a.jpg", "box": [x1, y1, x2, y2]}]``.

An image is named by its path relative to the input root, its path as given on the command
line, or (when unique among the inputs) its file name. Errors name the file, the entry
(``annotations[3]`` or ``entry [3]``, 0-based) and the problem.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from densevlm.errors import DenseVLMError
from densevlm.imaging import image_size

if TYPE_CHECKING:
    from densevlm.inference.io import InputImage

__all__ = ["BoxEntry", "EDGE_TOLERANCE", "check_boxes", "box_problem", "clip_boxes", "load_boxes", "assign_boxes",
           "oriented_size"]

log = logging.getLogger(__name__)

EDGE_TOLERANCE = 1.0
"""Pixels a box may reach past an image edge and still be clipped to it instead of refused."""


def check_boxes(boxes: Any, width: int, height: int, where: str = "image") -> np.ndarray:
    """Validate boxes against an image: ``[N, 4]`` float64 XYXY in original pixels, clipped to it.

    Raises:
        DenseVLMError: a box that is not 4 finite numbers, inverted, or outside the image by more
            than :data:`EDGE_TOLERANCE`.
    """
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise DenseVLMError(f"{where}: boxes must be numbers [x1, y1, x2, y2]") from None
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise DenseVLMError(f"{where}: boxes must have shape [N, 4] (x1, y1, x2, y2), got {list(arr.shape)}")
    for i, box in enumerate(arr):
        problem = box_problem(box, width, height)
        if problem:
            raise DenseVLMError(f"{where}: box {i} {_fmt_box(box)} {problem}")
    return clip_boxes(arr, width, height, where)


def clip_boxes(boxes: np.ndarray, width: int, height: int, where: str) -> np.ndarray:
    """``[N, 4]`` XYXY boxes clipped to ``[0, width] x [0, height]``; a warning names ``where`` when one moved."""
    clipped = np.column_stack([boxes[:, 0].clip(0, width), boxes[:, 1].clip(0, height),
                               boxes[:, 2].clip(0, width), boxes[:, 3].clip(0, height)])
    moved = int((clipped != boxes).any(axis=1).sum())
    if moved:
        log.warning("%s: %d %s up to %g px past the %dx%d image clipped to it", where, moved,
                    "box" if moved == 1 else "boxes", EDGE_TOLERANCE, width, height)
    return clipped


def box_problem(box: Sequence[float], width: Optional[int], height: Optional[int]) -> str:
    """Why an XYXY box is invalid ("" when it is fine); the image bounds are checked when given."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return "has a coordinate that is not a finite number"
    if x2 <= x1 or y2 <= y1:
        return "is inverted or empty (zero or negative width or height)"
    if x1 < -EDGE_TOLERANCE or y1 < -EDGE_TOLERANCE or x2 <= 0 or y2 <= 0:
        return "is outside the image (negative coordinate)"
    if width is not None and height is not None and (x2 > width + EDGE_TOLERANCE or y2 > height + EDGE_TOLERANCE
                                                     or x1 >= width or y1 >= height):
        return f"is outside the {width}x{height} image"
    return ""


def _fmt_box(box: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in box) + "]"


@dataclass(frozen=True)
class BoxEntry:
    """One box of a boxes file: the image it names, where it is in the file, XYXY original pixels."""

    image: str
    where: str
    box: tuple[float, float, float, float]
    given: str


def _numbers(value: Any) -> Optional[list[float]]:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    return [float(v) for v in value]


def load_boxes(path: str | Path) -> list[BoxEntry]:
    """Read a boxes file (see the module docstring); every box is checked for shape and order.

    Raises:
        DenseVLMError: unreadable file, unknown layout, or an entry that is malformed, inverted or
            has a negative coordinate (naming the file, the entry and the problem).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise DenseVLMError(f"{path}: boxes file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DenseVLMError(f"{path}: cannot read boxes file ({e})") from None
    except json.JSONDecodeError as e:
        raise DenseVLMError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    entries: list[BoxEntry] = []
    if isinstance(data, dict) and "annotations" in data:
        entries = _coco_entries(path, data)
    elif isinstance(data, list):
        entries = _list_entries(path, data)
    else:
        raise DenseVLMError(
            f"{path}: expected a COCO object with 'annotations' or a list of {{\"image\": ..., \"box\": [x1, y1, x2, y2]}} entries"
        )
    for entry in entries:
        problem = box_problem(entry.box, None, None)
        if problem:
            raise DenseVLMError(f"{path}: {entry.where} (image {entry.image}): box {entry.given} {problem}")
    return entries


def _coco_entries(path: Path, data: dict[str, Any]) -> list[BoxEntry]:
    images = data.get("images", [])
    annotations = data["annotations"]
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise DenseVLMError(f"{path}: 'images' and 'annotations' must be lists")
    names: dict[Any, str] = {}
    for i, im in enumerate(images):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise DenseVLMError(f"{path}: images[{i}] needs an 'id' and a 'file_name'")
        names[im["id"]] = im["file_name"]
    entries = []
    for i, ann in enumerate(annotations):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict):
            raise DenseVLMError(f"{path}: {where} is not an object")
        name = ann.get("file_name")
        if not isinstance(name, str):
            if ann.get("image_id") not in names:
                raise DenseVLMError(f"{path}: {where}: no 'file_name', and image_id {ann.get('image_id')!r} is not in 'images'")
            name = names[ann["image_id"]]
        bbox = _numbers(ann.get("bbox"))
        if bbox is None:
            raise DenseVLMError(f"{path}: {where} (image {name}): 'bbox' must be 4 numbers [x, y, width, height]")
        x, y, w, h = bbox
        given = _fmt_box(bbox) + " (x, y, width, height)"
        entries.append(BoxEntry(name, where, (x, y, x + w, y + h), given))
    return entries


def _list_entries(path: Path, data: list[Any]) -> list[BoxEntry]:
    entries = []
    for i, item in enumerate(data):
        where = f"entry [{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("image"), str):
            raise DenseVLMError(f"{path}: {where} must be an object with \"image\" and \"box\"")
        box = _numbers(item.get("box"))
        if box is None:
            raise DenseVLMError(f"{path}: {where} (image {item['image']}): 'box' must be 4 numbers [x1, y1, x2, y2]")
        given = _fmt_box(box)
        entries.append(BoxEntry(item["image"], where, (box[0], box[1], box[2], box[3]), given))
    return entries


def oriented_size(path: Path) -> Optional[tuple[int, int]]:
    """``(width, height)`` after EXIF orientation (:func:`densevlm.imaging.image_size`); None if unreadable."""
    try:
        return image_size(path)
    except DenseVLMError:
        return None


def assign_boxes(entries: Sequence[BoxEntry], images: Sequence["InputImage"], source: str | Path
                 ) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Match boxes to input images and check them against each image's size.

    Returns:
        ``{image name: ([N, 4] XYXY original pixels, [where each box is in the file])}``.

    Raises:
        DenseVLMError: an image name that matches several inputs, or a box outside its image.
    """
    by_rel: dict[str, "InputImage"] = {}
    by_base: dict[str, list["InputImage"]] = {}
    for image in images:
        by_rel[image.rel] = image
        by_rel[image.path.as_posix()] = image
        by_base.setdefault(image.path.name, []).append(image)
    grouped: dict[str, list[BoxEntry]] = {}
    unmatched: list[str] = []
    for entry in entries:
        key = entry.image.replace("\\", "/")
        if key.startswith("./"):
            key = key[2:]
        image = by_rel.get(key)
        if image is None and "/" not in key:
            candidates = by_base.get(key, [])
            if len(candidates) > 1:
                raise DenseVLMError(
                    f"{source}: {entry.where}: image '{entry.image}' matches {candidates[0].rel} and {candidates[1].rel}; "
                    "write its path relative to the input folder"
                )
            image = candidates[0] if candidates else None
        if image is None:
            unmatched.append(entry.image)
            continue
        grouped.setdefault(image.name, []).append(entry)
    if unmatched:
        log.warning("%s: %d %s images that are not among the inputs (e.g. %s)", source, len(unmatched),
                    "box names" if len(unmatched) == 1 else "boxes name", unmatched[0])
    by_name = {image.name: image for image in images}
    out: dict[str, tuple[np.ndarray, list[str]]] = {}
    for name, group in grouped.items():
        size = oriented_size(by_name[name].path)
        if size is not None:
            for entry in group:
                problem = box_problem(entry.box, size[0], size[1])
                if problem:
                    raise DenseVLMError(f"{source}: {entry.where} (image {entry.image}): box {entry.given} {problem}")
        boxes = np.array([e.box for e in group], dtype=np.float64).reshape(-1, 4)
        if size is not None:
            boxes = clip_boxes(boxes, size[0], size[1], f"{source} (image {group[0].image})")
        out[name] = (boxes, [e.where for e in group])
    return out
