"""The region-classification protocol on a list of labelled regions (e.g. expert-reviewed ones).

The regions a plant's experts confirmed or corrected in the review page form a small labelled
held-out set: each :class:`~densevlm.regions.labelled.LabelledRegion` has an image, a box (and
sometimes a mask) and a category. Box, mask (where a mask exists) and crop features are
classified exactly as in :mod:`densevlm.evaluation.protocol`; there is no per-pixel ground
truth, so no mIoU.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import torch

from densevlm.errors import DenseVLMError
from densevlm.evaluation.metrics import RegionCounter, SegmentationCounter
from densevlm.evaluation.protocol import EvalConfig, EvalResult, crop_logits, eval_result
from densevlm.imaging import open_image
from densevlm.regions import similarity
from densevlm.regions.labelled import LabelledRegion
from densevlm.regions.pooling import mask_token_weights, roi_pool, weighted_pool
from densevlm.regions.rle import decode_rle
from densevlm.review.reviewed import load_reviewed
from densevlm.vocab.vocabulary import Vocabulary

__all__ = ["evaluate_regions", "evaluate_reviewed"]


def _label(region: LabelledRegion, vocab: Vocabulary) -> int:
    """Vocabulary index of the region's category; DenseVLMError when it has none or ``vocab`` lacks it."""
    name = region.region_id or f"box {list(region.box)}"
    if region.category is None:
        raise DenseVLMError(f"{region.image_path}: region {name} has no category (only labelled regions can be evaluated)")
    try:
        return vocab.index(region.category)
    except KeyError:
        raise DenseVLMError(f"{region.image_path}: category '{region.category}' of region {name} is not in the vocabulary") from None


def evaluate_regions(model, regions: Sequence[LabelledRegion], vocab: Vocabulary, cfg: Optional[EvalConfig] = None,
                     progress: bool = True) -> EvalResult:
    """Classify every region's box / mask / crop feature; metrics as in the panoptic protocol.

    Every region needs a ``category`` of ``vocab`` (its vocabulary index is the label); the
    section (thing or stuff) comes from ``vocab``.
    """
    from tqdm import tqdm

    cfg = cfg or EvalConfig()
    if not regions:
        raise DenseVLMError("no labelled regions to evaluate (review some regions first)")
    size = cfg.size or model.input_size
    is_thing = torch.tensor(vocab.is_thing)
    counters = {name: RegionCounter(is_thing) for name in ("box", "mask", "crop")}
    by_image: dict[str, list[tuple[LabelledRegion, int]]] = {}
    for r in regions:
        by_image.setdefault(r.image_path, []).append((r, _label(r, vocab)))
    started = time.perf_counter()
    skipped: list[str] = []
    n_images = 0
    with torch.inference_mode():
        text = model.embed_vocabulary(vocab, templates=cfg.templates).float()
        for path, pairs in tqdm(by_image.items(), desc="eval", unit="img", disable=None if progress else True):
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
            items = [r for r, _ in pairs]
            boxes = torch.tensor([r.box for r in items], dtype=torch.float32)
            labels = torch.tensor([k for _, k in pairs], dtype=torch.int64)
            box_feats = roi_pool(dense, [plan.to_input(boxes)], model.patch_size)
            counters["box"].update(similarity.cosine(box_feats, text), labels)
            masked = [j for j, r in enumerate(items) if r.mask_rle is not None]
            if masked:
                masks = torch.stack([torch.from_numpy(decode_rle(items[j].mask_rle)) for j in masked])
                try:
                    weights = mask_token_weights(plan.masks_to_input(masks), model.patch_size)
                except DenseVLMError as e:
                    raise DenseVLMError(f"{path}: {e}") from None
                feats = weighted_pool(dense[0], weights.to(dense.device))
                counters["mask"].update(similarity.cosine(feats, text), labels[masked])
            if cfg.crops:
                thing = torch.tensor([vocab.is_thing[k] for _, k in pairs])
                counters["crop"].update(crop_logits(model, image, boxes, thing, cfg, text), labels)
    return eval_result(vocab, counters, SegmentationCounter(len(vocab)), replace(cfg, segmentation=False), skipped,
                       n_images=n_images, n_segments=len(regions), n_skipped=len(skipped), size=size,
                       wall_s=round(time.perf_counter() - started, 2), model=model.spec.source)


def evaluate_reviewed(model, db_path: str | Path, cfg: Optional[EvalConfig] = None) -> EvalResult:
    """:func:`evaluate_regions` on the regions of a review database that experts accepted or corrected."""
    reviewed = load_reviewed(db_path)
    regions = [r for r in reviewed.regions if r.category is not None]
    return evaluate_regions(model, regions, reviewed.vocab, cfg)
