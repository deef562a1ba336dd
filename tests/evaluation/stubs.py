"""A model stub whose dense features are one-hot by pixel colour, and hand-made panoptic datasets.

With the stub, the right answer of every metric is known by construction: a region's feature
is the (area-weighted) class histogram of its pixels, so its top-1 is the majority class and
its top-k order follows the histogram.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from densevlm.imaging import letterbox

PALETTE = np.array(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255], [128, 128, 128], [255, 128, 0]],
    dtype=np.uint8,
)


class ColourStub:
    """Dense feature of a token = one-hot of the nearest palette colour (after ``remap``)."""

    def __init__(self, num_classes: int, patch: int = 4, size: int = 32, remap: dict[int, int] | None = None,
                 bias: torch.Tensor | None = None) -> None:
        self.k = num_classes
        self.patch_size = patch
        self.input_size = size
        self.device = torch.device("cpu")
        self.remap = remap or {}
        self.bias = bias  # [K, K] row c = feature emitted for colour c (overrides one-hot)
        self.spec = SimpleNamespace(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), source="colour-stub")

    def prepare(self, image, size=None, square=False):
        return letterbox(image, size or self.input_size, self.patch_size, self.spec.mean, self.spec.std, square)

    def _features(self, colour_index: torch.Tensor) -> torch.Tensor:
        idx = colour_index.clone()
        for src, dst in self.remap.items():
            idx[colour_index == src] = dst
        if self.bias is not None:
            return self.bias[idx]
        return F.one_hot(idx, self.k).float()

    def _classify_pixels(self, x: torch.Tensor) -> torch.Tensor:
        rgb = (x * 255.0).permute(0, 2, 3, 1)  # [B, H, W, 3]
        pal = torch.tensor(PALETTE[: self.k], dtype=torch.float32)
        d = ((rgb[..., None, :] - pal) ** 2).sum(-1)
        return d.argmin(-1)

    def encode_dense(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        onehot = self._features(self._classify_pixels(x))  # [B, H, W, K]
        pooled = F.avg_pool2d(onehot.permute(0, 3, 1, 2), p)
        return F.normalize(pooled, dim=1)

    def encode_crops(self, image, boxes, context=1.0, size=None):
        arr = torch.from_numpy(np.array(image)).float().permute(2, 0, 1)[None] / 255.0
        idx = self._classify_pixels(arr)[0]
        feats = []
        for x1, y1, x2, y2 in boxes.tolist():
            region = idx[int(y1):int(y2), int(x1):int(x2)].reshape(-1)
            feats.append(self._features(region).mean(0))
        return F.normalize(torch.stack(feats), dim=-1)

    def embed_vocabulary(self, vocab, templates=None):
        return torch.eye(self.k)


def write_panoptic(root: Path, scenes: list[list[tuple[int, int, tuple[int, int, int, int]]]], categories: list[tuple[str, bool]],
                   size: int = 32, background: int | None = None) -> Path:
    """Write a tiny COCO-panoptic dataset.

    Args:
        scenes: per image, ``(segment_id, class_index, (x0, y0, x1, y1))`` rectangles painted in
            order (later on top); class ``k`` is painted in ``PALETTE[k]``.
        categories: ``(name, isthing)`` per class; category ids are ``k + 1``.
        background: class filling the image first (as segment id 99), if any.
    """
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "panoptic").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, rects in enumerate(scenes):
        rgb = np.zeros((size, size, 3), dtype=np.uint8)
        ids = np.zeros((size, size), dtype=np.int64)
        if background is not None:
            rects = [(99, background, (0, 0, size, size))] + list(rects)
        for sid, k, (x0, y0, x1, y1) in rects:
            rgb[y0:y1, x0:x1] = PALETTE[k]
            ids[y0:y1, x0:x1] = sid
        segs = []
        for sid, k, _ in rects:
            m = ids == sid
            if not m.any():
                continue
            ys, xs = np.nonzero(m)
            segs.append({"id": sid, "category_id": k + 1, "iscrowd": 0, "area": int(m.sum()),
                         "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]})
        name = f"{i:04d}.png"
        Image.fromarray(rgb).save(root / "images" / name)
        png = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
        Image.fromarray(png).save(root / "panoptic" / name)
        images.append({"id": i, "file_name": name, "width": size, "height": size})
        annotations.append({"image_id": i, "file_name": name, "segments_info": segs})
    cats = [{"id": k + 1, "name": n, "isthing": int(t)} for k, (n, t) in enumerate(categories)]
    (root / "panoptic.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    return root
