"""A model stub with known answers, and the JSON schema check shared by the segment tests."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from densevlm.imaging import letterbox
from densevlm.regions.pooling import roi_pool

# Class k is painted in COLOURS[k]; the stub recognises a pixel's class by its nearest colour.
COLOURS = np.array(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255], [128, 128, 128], [255, 128, 0]],
    dtype=np.uint8,
)


class PaletteStub:
    """Exactly the :class:`densevlm.dense.DenseRuntime` members ``segment`` calls, and nothing more.

    A token's dense feature is the normalised histogram of its pixels' classes (nearest
    palette colour), the class embeddings are the identity, so a region painted in one
    colour has a one-hot feature and a known softmax: ``e^T / (e^T + K - 1)`` for its class.
    """

    __slots__ = ("k", "patch_size", "input_size", "default_size", "logit_scale", "spec")

    def __init__(self, num_classes: int, patch: int = 8, size: int = 64, logit_scale: float = 10.0) -> None:
        self.k = num_classes
        self.patch_size = patch
        self.input_size = self.default_size = size
        self.logit_scale = logit_scale
        self.spec = SimpleNamespace(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), arch="palette-stub", source="stub")

    def prepare(self, image, size=None, square=False):
        return letterbox(image, size or self.input_size, self.patch_size, self.spec.mean, self.spec.std, square)

    def encode_dense(self, x: torch.Tensor) -> torch.Tensor:
        rgb = (x * 255.0).permute(0, 2, 3, 1)
        palette = torch.tensor(COLOURS[: self.k], dtype=torch.float32)
        index = ((rgb[..., None, :] - palette) ** 2).sum(-1).argmin(-1)
        onehot = F.one_hot(index, self.k).float().permute(0, 3, 1, 2)
        return F.normalize(F.avg_pool2d(onehot, self.patch_size), dim=1)

    def encode_boxes(self, x: torch.Tensor, boxes) -> torch.Tensor:
        return roi_pool(self.encode_dense(x), boxes, self.patch_size)

    def embed_vocabulary(self, vocab) -> torch.Tensor:
        return torch.eye(self.k)

    def pure_probability(self) -> float:
        """Softmax probability of the right class for a one-hot feature."""
        e = math.exp(self.logit_scale)
        return e / (e + self.k - 1)


def paint(size: tuple[int, int], rects: list[tuple[int, tuple[int, int, int, int]]], background: int) -> tuple[np.ndarray, np.ndarray]:
    """``([H, W, 3] uint8 image, [H, W] class map)`` of ``(class, (x1, y1, x2, y2))`` rectangles on a background class."""
    w, h = size
    classes = np.full((h, w), background, dtype=np.int64)
    for k, (x1, y1, x2, y2) in rects:
        classes[y1:y2, x1:x2] = k
    return COLOURS[classes], classes


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """``[H, W]`` bool mask of a JSON RLE (``counts`` as str), with pycocotools' numpy-2 notice silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def check_segment_json(doc: dict[str, Any], width: int, height: int, vocab_names: list[str]) -> None:
    """The documented ``NAME.json`` schema: keys, types, geometry and probabilities."""
    for key, kind in {"schema": str, "width": int, "height": int, "model": str, "input_size": int, "mode": str,
                      "min_area": int, "vocabulary": dict, "class_areas": list, "segments": list}.items():
        assert isinstance(doc.get(key), kind), (key, doc.get(key))
    assert doc["schema"] == "densevlm.segment/1"
    assert (doc["width"], doc["height"]) == (width, height)
    assert doc["mode"] in ("regions", "boxes")
    assert doc["vocabulary"]["names"] == vocab_names
    assert len(doc["vocabulary"]["isthing"]) == len(vocab_names)
    assert all(isinstance(t, bool) for t in doc["vocabulary"]["isthing"])
    shares = [c["share"] for c in doc["class_areas"]]
    assert shares == sorted(shares, reverse=True) and abs(sum(shares) - 1.0) < 1e-6
    ids = []
    for seg in doc["segments"]:
        for key, kind in {"id": int, "category": str, "category_index": int, "isthing": bool, "score": float,
                          "topk": list, "bbox": list, "area": int, "mask": dict, "source": str}.items():
            assert isinstance(seg.get(key), kind), (key, seg)
        ids.append(seg["id"])
        k = seg["category_index"]
        assert vocab_names[k] == seg["category"]
        assert seg["isthing"] == doc["vocabulary"]["isthing"][k]
        assert 0.0 <= seg["score"] <= 1.0
        x1, y1, x2, y2 = seg["bbox"]
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, seg["bbox"]
        assert seg["mask"]["size"] == [height, width] and isinstance(seg["mask"]["counts"], str)
        mask = decode_rle(seg["mask"])
        assert seg["area"] == int(mask.sum()) > 0
        ys, xs = np.nonzero(mask)
        assert xs.min() >= math.floor(x1) and xs.max() < math.ceil(x2) and ys.min() >= math.floor(y1) and ys.max() < math.ceil(y2)
        probs = [c["prob"] for c in seg["topk"]]
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) <= 1.0 + 1e-9 and all(p >= 0 for p in probs)
        assert all(c["category"] in vocab_names for c in seg["topk"])
        assert len({c["category"] for c in seg["topk"]}) == len(seg["topk"])
    assert ids == list(range(1, len(ids) + 1))
