"""Per-image defect scores (and what monitoring needs) from one forward pass of the dense map.

For an image letterboxed to the model input, the dense map ``[C, h, w]`` is scored against the
class embeddings ``[K, C]``; the ``[K, h, w]`` logits (``model.logit_scale`` times the cosines,
:mod:`densevlm.regions.similarity`) are bilinearly upsampled to the input and cropped to the
letterbox content, where a softmax over the ``K`` classes gives the per-pixel probabilities ``p_k(x)``. With ``D`` defect classes
(the vocabulary's ``[defects]``), the **score of defect d** is, by ``method``:

* ``"window"`` (default): the largest mean of ``p_d`` over any square window of ``min_area``
  input pixels (side ``round(sqrt(min_area))``) -- "the most defect-like patch at least that
  large"; continuous, and a single hot pixel cannot raise it.
* ``"pixel"``: the largest ``p_d(x)`` (no minimum area).
* ``"region"``: the largest mean ``p_d`` over an 8-connected region of pixels whose argmax
  class is ``d`` with at least ``min_area`` pixels (what the segment output holds); 0 when there
  is none.

The image's **NG score** is the largest defect score. Each defect also gets its peak region:
the 8-connected pixels with ``p_d >= 0.5 * max p_d`` around its most probable pixel, as a box
(XYXY, original pixels) and an area (original pixels). ``BENCHMARKS.md`` compares the methods.

For monitoring, the same pass gives the share of each argmax class, the share of pixels whose
winning probability is below ``low_confidence`` (0.5), the image embedding (the mean of the
dense tokens over the content, unit norm) and the image statistics of
:mod:`densevlm.inspection.image_stats` (brightness, sharpness).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from densevlm.errors import DenseVLMError
from densevlm.imaging import Letterbox
from densevlm.inspection.image_stats import image_statistics
from densevlm.regions import similarity
from densevlm.vocab import Vocabulary

__all__ = ["METHODS", "ScoreConfig", "ImageAnalysis", "analyse_images", "readable_images", "defect_scores",
           "peak_region"]

log = logging.getLogger(__name__)

METHODS = ("window", "pixel", "region")
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class ScoreConfig:
    """How scores are made (recorded in the operating point; inspection must use the same).

    Attributes:
        method: ``window``, ``pixel`` or ``region`` (see the module docstring).
        min_area: input pixels; None = half a model token (``patch**2 / 2``).
        size: model input side in pixels; None = the model's default (native for tiny models).
        low_confidence: a pixel whose winning probability is below this is low-confidence.
    """

    method: str = "window"
    min_area: Optional[int] = None
    size: Optional[int] = None
    low_confidence: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise DenseVLMError(f"score method '{self.method}' is not one of {', '.join(METHODS)}")
        if self.min_area is not None and self.min_area < 1:
            raise DenseVLMError(f"min_area must be at least 1 pixel, got {self.min_area}")

    def resolved(self, model: Any) -> "ScoreConfig":
        """A copy with ``size`` and ``min_area`` filled in for ``model``."""
        patch = int(model.patch_size)
        return ScoreConfig(self.method, self.min_area or max(1, patch * patch // 2), self.size or int(model.default_size),
                           self.low_confidence)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "min_area": self.min_area, "size": self.size,
                "low_confidence": self.low_confidence}


@dataclass
class ImageAnalysis:
    """Everything inspection and monitoring read from one image.

    Attributes:
        defect_scores: ``[D]`` score of each defect in [0, 1].
        defect_boxes: ``[D, 4]`` XYXY original pixels of each defect's peak region.
        defect_areas: ``[D]`` original pixels of each defect's peak region.
        class_shares: ``[K]`` share of content pixels whose argmax is each class.
        low_confidence: share of content pixels whose winning probability is below the limit.
        embedding: ``[C]`` unit-norm mean dense token over the content.
        image_stats: ``[2]`` brightness and sharpness of the original image (``image_stats``).
        plan: the letterbox of the image.
        probs: ``[K, h, w]`` per-pixel probabilities at content resolution (only when kept).
    """

    defect_scores: np.ndarray
    defect_boxes: np.ndarray
    defect_areas: np.ndarray
    class_shares: np.ndarray
    low_confidence: float
    embedding: np.ndarray
    image_stats: np.ndarray
    plan: Letterbox
    probs: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def score(self) -> float:
        """The NG score: the largest defect score (0 without defects in the vocabulary)."""
        return float(self.defect_scores.max()) if self.defect_scores.size else 0.0


def defect_scores(probs: np.ndarray, defect_indices: Sequence[int], method: str, min_area: int) -> np.ndarray:
    """``[D]`` scores from ``[K, h, w]`` per-pixel probabilities (see the module docstring)."""
    p = torch.from_numpy(np.ascontiguousarray(probs[list(defect_indices)], dtype=np.float32))
    if p.shape[0] == 0:
        return np.zeros(0)
    if method == "pixel":
        return p.flatten(1).max(dim=1).values.double().numpy()
    if method == "window":
        side = max(1, int(round(math.sqrt(min_area))))
        kh, kw = min(side, p.shape[1]), min(side, p.shape[2])
        return F.avg_pool2d(p[None], (kh, kw), stride=1)[0].flatten(1).max(dim=1).values.double().numpy()
    from scipy import ndimage

    labels = probs.argmax(axis=0)
    out = np.zeros(len(defect_indices))
    for j, k in enumerate(defect_indices):
        components, n = ndimage.label(labels == k, structure=_EIGHT)
        if n == 0:
            continue
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        sums = np.bincount(components.ravel(), weights=probs[k].ravel(), minlength=n + 1)
        big = np.flatnonzero(sizes[1:] >= min_area) + 1
        if big.size:
            out[j] = float((sums[big] / sizes[big]).max())
    return out


def peak_region(p: np.ndarray) -> tuple[np.ndarray, int]:
    """``(box XYXY, area)`` in content pixels of the 8-connected half-maximum region around the peak of ``p [h, w]``."""
    from scipy import ndimage

    peak = np.unravel_index(int(np.argmax(p)), p.shape)
    components, _ = ndimage.label(p >= 0.5 * p[peak], structure=_EIGHT)
    region = components == components[peak]
    ys, xs = np.nonzero(region)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64), int(region.sum())


def _analyse_one(dense: torch.Tensor, text: torch.Tensor, logit_scale: float, plan: Letterbox, patch: int,
                 vocab: Vocabulary, cfg: ScoreConfig, keep_probs: bool, image_stats: np.ndarray) -> ImageAnalysis:
    logits = logit_scale * similarity.cosine(dense, text, dim=0)  # scaled after the product, as inference/maps.py
    up = F.interpolate(logits[None], size=(plan.input_height, plan.input_width), mode="bilinear", align_corners=False)[0]
    probs_t = torch.softmax(up[:, : plan.height, : plan.width].double(), dim=0).float()
    winner, labels = probs_t.max(dim=0)
    probs = probs_t.cpu().numpy()
    k = len(vocab)
    shares = np.bincount(labels.cpu().numpy().ravel(), minlength=k).astype(np.float64) / labels.numel()
    defects = vocab.defect_indices
    scores = defect_scores(probs, defects, cfg.method, int(cfg.min_area))
    boxes = np.zeros((len(defects), 4))
    areas = np.zeros(len(defects), dtype=np.int64)
    for j, d in enumerate(defects):
        box, area = peak_region(probs[d])
        boxes[j] = plan.to_original(box)
        areas[j] = int(round(area / plan.scale**2))
    rows, cols = math.ceil(plan.height / patch), math.ceil(plan.width / patch)
    embedding = F.normalize(dense[:, :rows, :cols].mean(dim=(1, 2)), dim=0).cpu().numpy().astype(np.float64)
    return ImageAnalysis(scores, boxes, areas, shares, float((winner < cfg.low_confidence).float().mean()),
                         embedding, image_stats, plan, probs if keep_probs else None)


def readable_images(items: Sequence[Any], size: int, errors: dict[int, str]) -> Iterator[Image.Image]:
    """Each item (an image file or a PIL image) as an RGB image, in order, skipping what cannot be
    analysed: unreadable files, and images too small or thin for a ``size`` px input
    (:func:`~densevlm.imaging.check_image_size`). A skipped item's index and one-line reason
    (naming the file) go into ``errors``, and a warning is logged."""
    from densevlm.imaging import check_image_size, open_image, to_rgb

    for i, item in enumerate(items):
        try:
            image = to_rgb(item) if isinstance(item, Image.Image) else open_image(item)
        except DenseVLMError as e:
            errors[i] = str(e)
        else:
            try:
                check_image_size(image.width, image.height, size)
            except DenseVLMError as e:
                errors[i] = f"{'image' if isinstance(item, Image.Image) else item}: {e}"
            else:
                yield image
                continue
        log.warning("skipped: %s", errors[i])


def analyse_images(model: Any, images: Iterable[Image.Image], vocab: Vocabulary, cfg: ScoreConfig,
                   batch_size: int = 8, keep_probs: bool = False) -> Iterable[ImageAnalysis]:
    """Analyse images in batches (lazily, in order).

    Args:
        model: a :class:`~densevlm.model.DenseModel` (``prepare``, ``encode_dense``,
            ``embed_vocabulary``, ``patch_size``, ``logit_scale``).
        images: RGB PIL images (any size; each is letterboxed to a ``cfg.size`` square).
        cfg: a :meth:`ScoreConfig.resolved` config.
        keep_probs: keep each image's ``[K, h, w]`` probabilities (for pixel metrics).
    """
    if cfg.size is None or cfg.min_area is None:
        raise DenseVLMError("analyse_images needs a resolved ScoreConfig (call cfg.resolved(model))")
    patch = int(model.patch_size)
    with torch.inference_mode():
        text = model.embed_vocabulary(vocab).float()
    logit_scale = float(model.logit_scale)
    batch: list[tuple[torch.Tensor, Letterbox, np.ndarray]] = []
    iterator = iter(images)
    while True:
        image = next(iterator, None)
        if image is not None:
            batch.append((*model.prepare(image, cfg.size, square=True), image_statistics(image)))
        if batch and (image is None or len(batch) == batch_size):
            with torch.inference_mode():
                x = torch.stack([b[0] for b in batch]).to(text.device)
                dense = model.encode_dense(x).float()
                done = [_analyse_one(dense[i], text, logit_scale, plan, patch, vocab, cfg, keep_probs, stats)
                        for i, (_, plan, stats) in enumerate(batch)]
            yield from done
            batch = []
        if image is None:
            return
