"""COCO-panoptic datasets read with Pillow and numpy (panopticapi is not on PyPI).

A dataset is three things: a JSON file (``images``, ``annotations[].segments_info[]``,
``categories[]``), an image folder and a folder of panoptic PNGs whose pixel value encodes the
segment id as ``R + 256 G + 256^2 B`` (0 = void). ``--data`` accepts:

* a directory holding ``panoptic.json``, ``images/`` and ``panoptic/`` (``densevlm synth`` output);
* ``coco:ROOT`` -- COCO panoptic val2017: ``ROOT/val2017``, ``ROOT/panoptic_val2017``,
  ``ROOT/annotations/panoptic_val2017.json``;
* ``ade:ROOT`` -- ADE20K panoptic val (detectron2's conversion): ``ROOT/images/validation``,
  ``ROOT/ade20k_panoptic_val``, ``ROOT/ade20k_panoptic_val.json``;
* ``json=FILE,images=DIR,panoptic=DIR`` for any other layout.

Ground truth is read in the stored pixel frame: the panoptic PNGs and the JSON's boxes describe
the pixels as stored, so an image's EXIF orientation is *not* applied here (unlike every
command that reads user photos), and image and PNG always share one frame.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from densevlm.errors import DenseVLMError
from densevlm.imaging import open_image

__all__ = ["PanopticDataset", "PanopticSample", "read_panoptic_png", "resolve_panoptic_spec"]

log = logging.getLogger(__name__)


@dataclass
class PanopticSample:
    """One image with its ground truth.

    Attributes:
        index: position in the dataset.
        image_id: the JSON's image id.
        image: RGB PIL image at its original size, in the stored pixel frame (no EXIF rotation).
        ids: ``[H, W]`` int64 segment id per pixel (0 = void).
        segments: the JSON's ``segments_info`` entries (``id``, ``category_id``, ``bbox`` XYWH,
            ``area``, ``iscrowd``) that are present in the PNG.
        unlisted_pixels: pixels whose non-zero PNG id no ``segments_info`` entry lists (they
            count as void; :meth:`PanopticDataset.ground_truth_warning` reports them).
    """

    index: int
    image_id: Any
    image: Image.Image
    ids: np.ndarray
    segments: list[dict[str, Any]]
    file_name: str
    unlisted_pixels: int = 0


def read_panoptic_png(path: Path) -> np.ndarray:
    """``[H, W]`` int64 ids from a panoptic PNG; a non-RGB PNG is an error (it cannot encode ids)."""
    try:
        with Image.open(path) as im:
            if im.mode != "RGB":
                raise DenseVLMError(f"{path}: panoptic PNG must be RGB (id = R + 256 G + 256^2 B), found mode {im.mode}")
            arr = np.asarray(im, dtype=np.int64)
    except FileNotFoundError:
        raise DenseVLMError(f"{path}: panoptic PNG not found") from None
    except (OSError, SyntaxError) as e:
        raise DenseVLMError(f"{path}: not a readable PNG ({e})") from None
    return arr[..., 0] + 256 * arr[..., 1] + 65536 * arr[..., 2]


def resolve_panoptic_spec(spec: str | Path) -> tuple[Path, Path, Path]:
    """``(json, images_dir, panoptic_dir)`` for a ``--data`` value (see the module docstring)."""
    text = str(spec)
    if text.startswith("coco:"):
        root = Path(text[5:])
        return root / "annotations" / "panoptic_val2017.json", root / "val2017", root / "panoptic_val2017"
    if text.startswith("ade:"):
        root = Path(text[4:])
        return root / "ade20k_panoptic_val.json", root / "images" / "validation", root / "ade20k_panoptic_val"
    if "=" in text:
        parts = dict(p.split("=", 1) for p in text.split(",") if "=" in p)
        missing = [k for k in ("json", "images", "panoptic") if k not in parts]
        if missing:
            raise DenseVLMError(f"--data {text}: missing {', '.join(missing)}= (expected json=FILE,images=DIR,panoptic=DIR)")
        return Path(parts["json"]), Path(parts["images"]), Path(parts["panoptic"])
    root = Path(text)
    return root / "panoptic.json", root / "images", root / "panoptic"


class PanopticDataset:
    """Random access to a COCO-panoptic dataset; errors name the file and the problem.

    Ground truth that would be dropped silently is counted instead: annotations without
    ``segments_info`` and PNG ids that no ``segments_info`` entry lists (both read as void).
    :meth:`ground_truth_warning` turns the counts into one line; with ``strict`` either is an error.

    Args:
        spec: a ``--data`` value (see the module docstring).
        limit: use only the first ``limit`` images.
        strict: refuse incomplete ground truth instead of counting it.
    """

    def __init__(self, spec: str | Path, limit: Optional[int] = None, strict: bool = False) -> None:
        self.json_path, self.images_dir, self.panoptic_dir = resolve_panoptic_spec(spec)
        self.strict = strict
        if not self.json_path.is_file():
            raise DenseVLMError(f"{self.json_path}: panoptic JSON not found (--data {spec})")
        try:
            data = json.loads(self.json_path.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as e:  # bad JSON or UTF-8, a 4300-digit number, deep nesting
            raise DenseVLMError(f"{self.json_path}: not valid JSON ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})") from None
        except OSError as e:
            raise DenseVLMError(f"{self.json_path}: cannot read the panoptic JSON ({e.strerror})") from None
        if not isinstance(data, dict):
            raise DenseVLMError(f"{self.json_path}: top level must be an object with images, annotations, categories")
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise DenseVLMError(f"{self.json_path}: missing '{key}' (not a COCO panoptic file)")
            if not isinstance(data[key], list):
                raise DenseVLMError(f"{self.json_path}: '{key}' must be a list")
        self.categories: list[dict[str, Any]] = [self._checked(c, "categories", i, {"id": _ID, "name": str})
                                                 for i, c in enumerate(data["categories"])]
        self.category_index = {c["id"]: i for i, c in enumerate(self.categories)}
        images = {}
        for i, im in enumerate(data["images"]):
            im = self._checked(im, "images", i, {"id": _ID, "file_name": str})
            images[im["id"]] = im
        self.records: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for i, ann in enumerate(data["annotations"]):
            ann = self._checked(ann, "annotations", i, {"image_id": _ID, "file_name": str})
            if ann["image_id"] not in images:
                raise DenseVLMError(f"{self.json_path}: annotation {ann['file_name']} refers to unknown image id {ann['image_id']}")
            self.records.append((images[ann["image_id"]], ann))
        if limit is not None:
            self.records = self.records[:limit]
        if not self.records:
            raise DenseVLMError(f"{self.json_path}: dataset has no annotated images")
        self.lacking_segments_info = [ann["file_name"] for _, ann in self.records if "segments_info" not in ann]
        if strict and self.lacking_segments_info:
            raise DenseVLMError(f"{self.json_path}: {len(self.lacking_segments_info)} annotation(s) lack "
                                f"'segments_info' (e.g. {self.lacking_segments_info[0]}); their segments cannot be evaluated")

    def _checked(self, item: Any, key: str, i: int, fields: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise DenseVLMError(f"{self.json_path}: {key}[{i}] must be an object")
        for name, kind in fields.items():
            if not isinstance(item.get(name), kind) or isinstance(item.get(name), bool):
                raise DenseVLMError(f"{self.json_path}: {key}[{i}] needs '{name}' ({'an id' if kind is _ID else 'a string'})")
        return item

    def __len__(self) -> int:
        return len(self.records)

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in self.categories]

    @property
    def is_thing(self) -> list[bool]:
        return [bool(c.get("isthing", 0)) for c in self.categories]

    def image_path(self, index: int) -> Path:
        return self.images_dir / self.records[index][0]["file_name"]

    def load(self, index: int) -> PanopticSample:
        """Read image ``index`` and its ground truth, checking that they agree.

        Raises:
            DenseVLMError: unreadable files, sizes that differ, a ``segments_info`` entry that is
                malformed, names an unknown category or is absent from the PNG; with ``strict``
                also PNG ids that no entry lists.
        """
        info, ann = self.records[index]
        image = open_image(self.image_path(index), orientation=False)  # the annotations' frame
        png_path = self.panoptic_dir / ann["file_name"]
        ids = read_panoptic_png(png_path)
        if ids.shape != (image.height, image.width):
            raise DenseVLMError(f"{png_path}: size {ids.shape[1]}x{ids.shape[0]} differs from its image {image.width}x{image.height}")
        values, counts = np.unique(ids, return_counts=True)
        present = dict(zip(values.tolist(), counts.tolist()))
        infos = ann.get("segments_info", [])
        if not isinstance(infos, list):
            raise DenseVLMError(f"{self.json_path}: 'segments_info' of {ann['file_name']} must be a list")
        segments = []
        for seg in infos:
            if not isinstance(seg, dict) or not isinstance(seg.get("id"), int) or isinstance(seg.get("id"), bool):
                raise DenseVLMError(f"{self.json_path}: a segments_info entry of {ann['file_name']} needs an integer 'id'")
            if not isinstance(seg.get("category_id"), _ID) or seg.get("category_id") not in self.category_index:
                raise DenseVLMError(f"{png_path}: segment {seg.get('id')} has unknown category id {seg.get('category_id')}")
            if seg["id"] not in present:
                raise DenseVLMError(f"{png_path}: segment id {seg['id']} from the JSON is absent from the PNG")
            segments.append(seg)
        listed = {seg["id"] for seg in segments}
        unlisted = sorted(v for v in present if v != 0 and v not in listed)
        if unlisted and self.strict and "segments_info" in ann:
            raise DenseVLMError(f"{png_path}: {len(unlisted)} segment id(s) in the PNG are not listed in "
                                f"{self.json_path} (e.g. {unlisted[0]})")
        return PanopticSample(index, info["id"], image, ids, segments, info["file_name"],
                              unlisted_pixels=sum(present[v] for v in unlisted))

    def ground_truth_warning(self, unlisted_images: int, unlisted_pixels: int) -> Optional[str]:
        """One line counting the ground truth that was read as void, or None when there was none.

        Args:
            unlisted_images: images whose PNG holds ids that no ``segments_info`` entry lists
                (those lacking ``segments_info`` included).
            unlisted_pixels: their pixels, summed over images.
        """
        parts = []
        if self.lacking_segments_info:
            parts.append(f"{len(self.lacking_segments_info)} of {len(self.records)} annotations lack 'segments_info' "
                         f"(e.g. {self.lacking_segments_info[0]})")
        if unlisted_images:
            parts.append(f"{unlisted_images} image(s) hold PNG ids not listed in the JSON ({unlisted_pixels:,} pixels)")
        if not parts:
            return None
        return f"{self.json_path}: {'; '.join(parts)}; those segments count as void (pass --strict to stop instead)"


_ID = (int, str)
