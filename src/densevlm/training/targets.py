"""Training targets: the regions of each image and the frozen models' verdicts on them.

For the DenseVLM family the frozen teacher retrieves a category for every region
(:func:`~densevlm.retrieval.teacher.classify_regions`), optionally on extra boxes around its own
part blobs; for CLIPSelf (or a CLIPSelf term) a frozen copy of the student embeds each region's
crop. Expert verdicts from the review loop replace the sampled regions of their images and the
teacher's label of each region. Targets live on the CPU and, with ``cache_teacher``, are
computed once per image, together with the other images first seen at the same step.

Float results of the teacher depend, in their last bits, on the batch an image is computed in,
so a resumed run must compute each image in the batch the uninterrupted run used: after
:meth:`TargetBuilder.resume_at`, an image first seen before the resume is computed with the
rest of its first step's new images (decoded again), which makes resume exact and costs no
more teacher passes than the uninterrupted run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from densevlm.data.images import FileListSource, ImageSource
from densevlm.errors import DenseVLMError
from densevlm.model import DenseModel
from densevlm.regions.labelled import LabelledRegion
from densevlm.regions.sources import region_boxes, token_boxes
from densevlm.retrieval.teacher import Retrieval, classify_parts, classify_regions, part_blobs, teacher_region_features
from densevlm.review.reviewed import ReviewedSet
from densevlm.training.config import TrainConfig
from densevlm.training.data import model_batch
from densevlm.training.precision import Precision

__all__ = ["RegionTargets", "TargetBuilder", "match_reviewed", "apply_verdicts"]

log = logging.getLogger(__name__)


@dataclass
class RegionTargets:
    """Per-image training targets, kept in the teacher cache."""

    boxes: torch.Tensor  # [N, 4] content pixels
    retrieval: Optional[Retrieval] = None  # densevlm family
    crop_emb: Optional[torch.Tensor] = None  # clipself
    weights: Optional[torch.Tensor] = None  # [N] loss weights (reviewed regions)


# An expert verdict and the index of its category in the reviewed vocabulary (None: no category).
Verdict = tuple[LabelledRegion, Optional[int]]


def match_reviewed(reviewed: ReviewedSet, source: ImageSource) -> dict[int, list[Verdict]]:
    """Group verdicts by the index of their image in the training source (by resolved path),
    each with its category's index in ``reviewed.vocab``.

    Raises:
        DenseVLMError: ``source`` is not a list of files (tar shards have no paths to match).
    """
    if not isinstance(source, FileListSource):
        raise DenseVLMError("--reviewed needs --images to be a folder (the reviewed images are files)")
    index = {str(Path(p).resolve()): i for i, p in enumerate(source.files)}
    out: dict[int, list[Verdict]] = {}
    unmatched = 0
    for t in reviewed.regions:
        i = index.get(str(Path(t.image_path).resolve()))
        if i is None:
            unmatched += 1
        else:
            out.setdefault(i, []).append((t, None if t.category is None else reviewed.vocab.index(t.category)))
    if unmatched:
        log.warning("%d reviewed regions are on images outside --images; they are not used", unmatched)
    log.info("%d reviewed regions on %d training images", sum(len(v) for v in out.values()), len(out))
    return out


def apply_verdicts(targets: RegionTargets, verdicts: list[Verdict], class_is_thing: torch.Tensor,
                   smoothing: float, weight: float) -> None:
    """Expert labels replace the teacher's, in place: a near one-hot target (``smoothing`` spread
    over the other classes), the section of the category decides thing/stuff, rejected regions
    are dropped, unsure ones keep the teacher's. Labelled regions get loss weight ``weight``."""
    r = targets.retrieval
    k = len(class_is_thing)
    weights = torch.ones(len(verdicts))
    for j, (v, label) in enumerate(verdicts):
        if v.rejected:
            r.kept[j] = False
        elif label is not None:
            probs = torch.full((k,), smoothing / max(1, k - 1))
            probs[label] = 1.0 - smoothing if k > 1 else 1.0
            r.probs[j] = probs
            r.logits[j] = probs.clamp_min(1e-8).log()
            r.label[j] = label
            r.confidence[j] = probs[label]
            r.is_thing[j] = bool(class_is_thing[label])
            r.kept[j] = True
            weights[j] = weight
    targets.weights = weights


class TargetBuilder:
    """Targets of each image of a step, from the cache or computed with the frozen models.

    Args:
        teacher: names regions (for ``clipself``: the frozen copy of the student, embedding crops).
        frozen: frozen copy of the student for a CLIPSelf term beside the KL, or None.
        text_teacher, class_is_thing, logit_scale: ``[K, C]`` teacher class embeddings, ``[K]`` bool, the
            cosines' multiplier.
        side: input side of the models (content is letterboxed to it).
        reviewed, smoothing: expert verdicts by image index (:func:`match_reviewed`), label smoothing.
        patch: the student's patch size in input pixels (the token cells of ``thing_tokens``).
    """

    def __init__(self, cfg: TrainConfig, teacher: DenseModel, frozen: Optional[DenseModel], text_teacher: torch.Tensor,
                 class_is_thing: torch.Tensor, logit_scale: float, side: int, precision: Precision,
                 reviewed: dict[int, list[Verdict]], smoothing: float, patch: int) -> None:
        self.cfg = cfg
        self.patch = patch
        self.teacher, self.frozen = teacher, frozen
        self.text_teacher, self.class_is_thing, self.logit_scale = text_teacher, class_is_thing, logit_scale
        self.side, self.precision = side, precision
        self.device = precision.device
        self.reviewed, self.smoothing = reviewed, smoothing
        self.cache: dict[int, RegionTargets] = {}
        self._first_step: dict[int, int] = {}  # image -> first step, for images first seen before a resume
        self._load: Optional[Callable[[int], dict[str, Any]]] = None
        self._steps: Optional[Callable[[int], list[int]]] = None

    def __call__(self, items: list[dict[str, Any]], step: int) -> list[RegionTargets]:
        """Targets of ``items`` (decoded images with ``index`` and ``content``) at ``step``."""
        if not self.cfg.cache_teacher:
            return self._compute(items, step)
        for first in sorted({self._first_step[it["index"]] for it in items if it["index"] in self._first_step}):
            self._replay(first)
        self._fill(items, step)
        return [self.cache[it["index"]] for it in items]

    def resume_at(self, start: int, n_images: int, steps: Callable[[int], list[int]],
                  load: Callable[[int], dict[str, Any]]) -> None:
        """Prepare to continue a run at step ``start`` with an empty cache (no-op without the cache).

        Args:
            n_images: images in the source (the scan for first steps stops once all were seen).
            steps: step -> this process's image indices at that step (the run's sampler).
            load: index -> decoded item as the run's loader makes it (``content`` or ``error``).
        """
        if not self.cfg.cache_teacher:
            return
        self._steps, self._load = steps, load
        for t in range(start):
            for i in steps(t):
                self._first_step.setdefault(i, t)
            if len(self._first_step) == n_images:
                break

    def _fill(self, items: list[dict[str, Any]], step: int) -> None:
        missing = [it for it in items if it["index"] not in self.cache]
        if missing:
            for it, t in zip(missing, self._compute(missing, step)):
                self.cache[it["index"]] = t

    def _replay(self, first: int) -> None:
        """Compute the images first seen at step ``first`` (before the resume) as one batch, as
        the uninterrupted run did."""
        group = [i for i in self._steps(first) if self._first_step.get(i) == first]
        for i in group:
            self._first_step.pop(i, None)
        items = [it for it in map(self._load, group) if "error" not in it]
        if items:
            self._fill(items, first)

    def _regions(self, index: int, step: int, content: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The drawn regions of an image: ``([N, 4] boxes, T)``, the last ``T`` of them token cells."""
        key = [self.cfg.seed, index] if self.cfg.cache_teacher else [self.cfg.seed, step, index]
        rng = np.random.default_rng(key)
        boxes = region_boxes(self.cfg.regions, content.float() / 255.0, rng, self.cfg.max_boxes)
        if self.cfg.thing_tokens == 0 or self.cfg.method == "clipself":  # CLIPSelf has no teacher to name them
            return boxes, 0
        h, w = content.shape[-2:]
        tokens = token_boxes(w, h, self.patch, rng, self.cfg.thing_tokens)
        return torch.cat([boxes, tokens]), tokens.shape[0]

    def _reviewed_boxes(self, item: dict[str, Any]) -> torch.Tensor:
        boxes = torch.tensor([v.box for v, _ in self.reviewed[item["index"]]], dtype=torch.float32).reshape(-1, 4)
        return item["plan"].to_input(boxes)

    def _compute(self, items: list[dict[str, Any]], step: int) -> list[RegionTargets]:
        """Regions of each image and the frozen models' verdicts on them (on the CPU)."""
        cfg = self.cfg
        contents = [it["content"] for it in items]
        drawn = [(self._reviewed_boxes(it), 0) if it["index"] in self.reviewed
                 else self._regions(it["index"], step, it["content"]) for it in items]
        boxes = [b for b, _ in drawn]
        counts = [b.shape[0] for b in boxes]
        on_device = [b.to(self.device) for b in boxes]
        images = model_batch(self.teacher, contents, self.side, self.device)
        with torch.no_grad(), self.precision.autocast():
            if cfg.method == "clipself":
                emb = teacher_region_features(self.teacher, images, on_device, "crop").float().cpu()
                return [RegionTargets(b, crop_emb=e) for b, e in zip(boxes, emb.split(counts))]
            dense_map = self.teacher.encode_dense(images) if cfg.teacher_parts > 0 else None
            feats = teacher_region_features(self.teacher, images, on_device, cfg.retrieval_features,
                                            dense_map=dense_map)
            feats = tuple(f.float() for f in feats) if isinstance(feats, tuple) else feats.float()
            with torch.autocast(self.device.type, enabled=False):  # fp32 logits and targets, as the student's
                r = classify_regions(feats, self.text_teacher, self.class_is_thing, self.logit_scale, cfg.threshold,
                                     cfg.retrieval_features).cpu()
            per_image, start = [], 0
            for i, (n, (_, tokens)) in enumerate(zip(counts, drawn)):
                keep = torch.ones(n, dtype=torch.bool)  # token cells: only those the teacher calls things stay
                keep[n - tokens:] = r.is_thing[start + n - tokens: start + n]
                per_image.append(r.select(torch.arange(start, start + n)[keep]))
                boxes[i] = boxes[i][keep]
                start += n
            if cfg.teacher_parts > 0:
                boxes, per_image = self._add_teacher_parts(items, dense_map, boxes, per_image)
            counts = [b.shape[0] for b in boxes]
            on_device = [b.to(self.device) for b in boxes]
            crops = None
            if self.frozen is not None:
                own = model_batch(self.frozen, contents, self.side, self.device)
                crops = teacher_region_features(self.frozen, own, on_device, "crop").float().cpu().split(counts)
        targets = []
        for i, (it, b) in enumerate(zip(items, boxes)):
            t = RegionTargets(b, retrieval=per_image[i], crop_emb=crops[i] if crops is not None else None)
            if it["index"] in self.reviewed:
                apply_verdicts(t, self.reviewed[it["index"]], self.class_is_thing, self.smoothing, cfg.reviewed_weight)
            targets.append(t)
        return targets

    def _add_teacher_parts(self, items: list[dict[str, Any]], dense_map: torch.Tensor, boxes: list[torch.Tensor],
                           per_image: list[Retrieval]) -> tuple[list[torch.Tensor], list[Retrieval]]:
        """Append boxes around the teacher's part blobs (taught as things) to each unreviewed image.

        Args:
            dense_map: the teacher's ``[B, C, h, w]`` dense map of these images.
        """
        p = self.teacher.patch_size
        sizes = [it["content"].shape[-2:] for it in items]
        valid = [((h + p - 1) // p, (w + p - 1) // p) for h, w in sizes]
        blobs = part_blobs(dense_map, self.text_teacher, self.class_is_thing, valid, self.cfg.teacher_parts)
        out_boxes, out_retrieval = [], []
        for it, b, r, (h, w), (blob_boxes, blob_feats) in zip(items, boxes, per_image, sizes, blobs):
            if it["index"] in self.reviewed or blob_boxes.shape[0] == 0:
                out_boxes.append(b)
                out_retrieval.append(r)
                continue
            extra = blob_boxes * p
            extra[:, 0::2] = extra[:, 0::2].clamp(max=float(w))
            extra[:, 1::2] = extra[:, 1::2].clamp(max=float(h))
            parts = classify_parts(blob_feats, self.text_teacher, self.class_is_thing, self.logit_scale).cpu()
            out_boxes.append(torch.cat([b, extra]))
            out_retrieval.append(Retrieval.cat([r, parts]))
        return out_boxes, out_retrieval
