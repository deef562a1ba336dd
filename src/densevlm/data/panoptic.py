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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from densevlm.errors import DenseVLMError
from densevlm.imaging import open_image

__all__ = ["PanopticDataset", "PanopticSample", "read_panoptic_png", "resolve_panoptic_spec"]


@dataclass
class PanopticSample:
    """One image with its ground truth.

    Attributes:
        index: position in the dataset.
        image_id: the JSON's image id.
        image: RGB PIL image at its original size.
        ids: ``[H, W]`` int64 segment id per pixel (0 = void).
        segments: the JSON's ``segments_info`` entries (``id``, ``category_id``, ``bbox`` XYWH,
            ``area``, ``iscrowd``) that are present in the PNG.
    """

    index: int
    image_id: Any
    image: Image.Image
    ids: np.ndarray
    segments: list[dict[str, Any]]
    file_name: str


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

    Args:
        spec: a ``--data`` value (see the module docstring).
        limit: use only the first ``limit`` images.
    """

    def __init__(self, spec: str | Path, limit: Optional[int] = None) -> None:
        self.json_path, self.images_dir, self.panoptic_dir = resolve_panoptic_spec(spec)
        if not self.json_path.is_file():
            raise DenseVLMError(f"{self.json_path}: panoptic JSON not found (--data {spec})")
        try:
            data = json.loads(self.json_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DenseVLMError(f"{self.json_path}: not valid JSON ({e})") from None
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise DenseVLMError(f"{self.json_path}: missing '{key}' (not a COCO panoptic file)")
        self.categories: list[dict[str, Any]] = data["categories"]
        self.category_index = {c["id"]: i for i, c in enumerate(self.categories)}
        images = {im["id"]: im for im in data["images"]}
        self.records: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for ann in data["annotations"]:
            if ann.get("image_id") not in images:
                raise DenseVLMError(f"{self.json_path}: annotation {ann.get('file_name')} refers to unknown image id {ann.get('image_id')}")
            self.records.append((images[ann["image_id"]], ann))
        if limit is not None:
            self.records = self.records[:limit]
        if not self.records:
            raise DenseVLMError(f"{self.json_path}: dataset has no annotated images")

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
        """Read image ``index`` and its ground truth, checking that they agree."""
        info, ann = self.records[index]
        image = open_image(self.image_path(index))
        png_path = self.panoptic_dir / ann["file_name"]
        ids = read_panoptic_png(png_path)
        if ids.shape != (image.height, image.width):
            raise DenseVLMError(f"{png_path}: size {ids.shape[1]}x{ids.shape[0]} differs from its image {image.width}x{image.height}")
        present = set(np.unique(ids).tolist())
        segments = []
        for seg in ann.get("segments_info", []):
            if seg.get("category_id") not in self.category_index:
                raise DenseVLMError(f"{png_path}: segment {seg.get('id')} has unknown category id {seg.get('category_id')}")
            if seg.get("id") not in present:
                raise DenseVLMError(f"{png_path}: segment id {seg.get('id')} from the JSON is absent from the PNG")
            segments.append(seg)
        return PanopticSample(index, info["id"], image, ids, segments, info["file_name"])
