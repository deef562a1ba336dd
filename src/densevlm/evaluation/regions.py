"""The region-classification protocol on a list of labelled regions (e.g. expert-reviewed ones).

The regions a plant's experts confirmed or corrected in the review page form a small labelled
held-out set: each has an image, a box (and sometimes a mask) and a category. Box, mask (where
a mask exists) and crop features are classified exactly as in :mod:`densevlm.evaluation.protocol`;
there is no per-pixel ground truth, so no mIoU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from densevlm.errors import DenseVLMError
from densevlm.evaluation.metrics import RegionCounter, SegmentationCounter
from densevlm.evaluation.protocol import EvalConfig, EvalResult, per_class_rows
from densevlm.imaging import open_image
from densevlm.regions import similarity
from densevlm.regions.pooling import roi_pool, weighted_pool
from densevlm.regions.rle import decode_rle
from densevlm.review.reviewed import load_reviewed
from densevlm.vocab.vocabulary import Vocabulary

__all__ = ["LabelledRegion", "evaluate_regions", "evaluate_reviewed"]


@dataclass(frozen=True)
class LabelledRegion:
    """One labelled region.

    Attributes:
        image_path: the image file.
        box: XYXY in original image pixels.
        label: vocabulary index of its category.
        mask_rle: COCO RLE (``counts`` as str) at the original size, or None.
    """

    image_path: str
    box: tuple[float, float, float, float]
    label: int
    mask_rle: Optional[dict[str, Any]] = None


def evaluate_regions(model, regions: Sequence[LabelledRegion], vocab: Vocabulary, cfg: Optional[EvalConfig] = None,
                     progress: bool = True) -> EvalResult:
    """Classify every region's box / mask / crop feature; metrics as in the panoptic protocol."""
    from tqdm import tqdm

    cfg = cfg or EvalConfig()
    if not regions:
        raise DenseVLMError("no labelled regions to evaluate (review some regions first)")
    size = cfg.size or model.input_size
    is_thing = torch.tensor(vocab.is_thing)
    counters = {name: RegionCounter(is_thing) for name in ("box", "mask", "crop")}
    by_image: dict[str, list[LabelledRegion]] = {}
    for r in regions:
        by_image.setdefault(r.image_path, []).append(r)
    started = time.perf_counter()
    skipped: list[str] = []
    n_images = 0
    with torch.inference_mode():
        text = model.embed_vocabulary(vocab, templates=cfg.templates).float()
        for path, items in tqdm(by_image.items(), desc="eval", unit="img", disable=None if progress else True):
            try:
                image = open_image(path)
            except DenseVLMError as e:
                if not cfg.skip_bad:
                    raise
                skipped.append(str(e))
                continue
            n_images += 1
            x, plan = model.prepare(image, size=size, square=cfg.square)
            dense = model.encode_dense(x[None].to(model.device)).float()
            boxes = torch.tensor([r.box for r in items], dtype=torch.float32)
            labels = torch.tensor([r.label for r in items], dtype=torch.int64)
            box_feats = roi_pool(dense, [boxes * plan.scale], model.patch_size)
            counters["box"].update(similarity.cosine(box_feats, text), labels)
            masked = [j for j, r in enumerate(items) if r.mask_rle is not None]
            if masked:
                weights = []
                for j in masked:
                    m = torch.from_numpy(decode_rle(items[j].mask_rle).astype(np.float32))
                    resized = F.interpolate(m[None, None], size=(plan.height, plan.width), mode="area")[0, 0]
                    canvas = torch.zeros(plan.input_height, plan.input_width)
                    canvas[: plan.height, : plan.width] = resized
                    weights.append(F.avg_pool2d(canvas[None, None], model.patch_size)[0, 0])
                feats = weighted_pool(dense[0], torch.stack(weights).to(dense.device))
                counters["mask"].update(similarity.cosine(feats, text), labels[masked])
            if cfg.crops:
                thing = torch.tensor([vocab.is_thing[r.label] for r in items])
                feats = torch.zeros(len(items), text.shape[1])
                for flag, context in ((True, cfg.thing_context), (False, 1.0)):
                    sel = (thing == flag).nonzero(as_tuple=True)[0]
                    if sel.numel():
                        feats[sel] = model.encode_crops(image, boxes[sel], context=context).float().cpu()
                counters["crop"].update(similarity.cosine(feats, text.cpu()), labels)
    metrics: dict[str, Any] = {}
    for name, counter in counters.items():
        if name == "crop" and not cfg.crops:
            continue
        metrics.update(counter.summary(name))
    metrics["fg_bias"], metrics["bg_bias"] = metrics["box.fg_bias"], metrics["box.bg_bias"]
    metrics.update({"n_images": n_images, "n_segments": len(regions), "n_skipped": len(skipped), "size": size,
                    "wall_s": round(time.perf_counter() - started, 2), "model": model.spec.source})
    no_seg = EvalConfig(crops=cfg.crops, segmentation=False)
    per_class = per_class_rows(vocab, counters, SegmentationCounter(len(vocab)), no_seg)
    confusion = {name: c.confusion.tolist() for name, c in counters.items() if name != "crop" or cfg.crops}
    return EvalResult(metrics, per_class, confusion, list(vocab.names), list(vocab.is_thing), skipped)


def evaluate_reviewed(model, db_path: str | Path, cfg: Optional[EvalConfig] = None) -> EvalResult:
    """:func:`evaluate_regions` on the regions of a review database that experts accepted or corrected."""
    reviewed = load_reviewed(db_path)
    regions = [LabelledRegion(r.image_path, r.box, r.label, r.mask_rle) for r in reviewed.regions if r.label is not None]
    return evaluate_regions(model, regions, reviewed.vocab, cfg)
