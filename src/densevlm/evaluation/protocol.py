"""The paper's region-classification protocol (DenseVLM Table 1), foreground bias and mIoU.

For every ground-truth panoptic segment (box at least 8x8 and at most 1024x1024 original
pixels, at most 100 per image) three features are classified against the class text
embeddings: the **box** (RoI-align on the dense map), the **mask** (mean of the dense map
under the mask) and the **crop** (the box cut out of the original image -- 1.5x enlarged for
things -- and encoded as a whole image). Accuracy is averaged over classes, separately for
thing and stuff segments. The foreground-bias rate is the share of stuff segments whose top-1
class is a thing; its mirror, the background-bias rate, the share of thing segments predicted
as stuff. Semantic segmentation takes the label map the ``segment`` command ships
(:func:`densevlm.inference.maps.pixel_predictions`: per-pixel argmax of the bilinearly
upsampled logits) at the evaluation resolution.

Images are letterboxed: longest side ``size``, padded to a square (as the reference code does).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from densevlm.data.panoptic import PanopticDataset
from densevlm.errors import DenseVLMError
from densevlm.evaluation.metrics import RegionCounter, SegmentationCounter
from densevlm.imaging import Letterbox, letterbox
from densevlm.regions import similarity
from densevlm.regions.pooling import mask_token_weights, roi_pool, weighted_pool
from densevlm.vocab.vocabulary import Vocabulary

__all__ = ["EvalConfig", "EvalResult", "evaluate", "map_categories", "dataset_vocabulary", "make_validator"]

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """Protocol settings.

    Attributes:
        size: longest side of the model input; None = the model's default input size.
        square: pad inputs to ``size x size`` (the reference protocol) instead of to the patch.
        max_segments: segments per image, in JSON order.
        min_box_side, max_box_side: skip segments whose box area (original pixels) is below
            ``min_box_side**2`` or above ``max_box_side**2``.
        crops: also classify crop features (one forward pass per segment).
        thing_context: crop enlargement for thing boxes (stuff crops use the tight box).
        segmentation: also compute mIoU.
        batch_size, workers: data loading (decoding and letterboxing happen in workers).
        skip_bad: count and report unreadable or inconsistent items instead of stopping.
        templates: prompt template set (default the model's own).
    """

    size: Optional[int] = None
    square: bool = True
    max_segments: int = 100
    min_box_side: float = 8.0
    max_box_side: float = 1024.0
    crops: bool = True
    thing_context: float = 1.5
    segmentation: bool = True
    batch_size: int = 8
    workers: int = 0
    skip_bad: bool = False
    templates: Optional[str] = None


@dataclass
class EvalResult:
    """Flat metrics (``box.thing.macc1`` ...), per-class rows and the raw counters."""

    metrics: dict[str, Any]
    per_class: list[dict[str, Any]]
    confusion: dict[str, list[list[int]]]
    class_names: list[str]
    is_thing: list[bool]
    skipped: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            **self.metrics,
            "per_class": self.per_class,
            "confusion": self.confusion,
            "class_names": self.class_names,
            "is_thing": self.is_thing,
            "skipped_items": self.skipped,
        }


def _normalise(name: str) -> str:
    name = re.sub(r"[-_/]+", " ", name.lower())
    name = re.sub(r"\b(merged|other|stuff)\b", " ", name)
    return " ".join(name.split())


def dataset_vocabulary(dataset: PanopticDataset) -> Vocabulary:
    """The dataset's own categories as a vocabulary (names cleaned of COCO's ``-merged`` suffixes;
    ``source``: the dataset's JSON)."""
    things, stuff = [], []
    for c, thing in zip(dataset.categories, dataset.is_thing):
        clean = _normalise(c["name"]) or c["name"]
        (things if thing else stuff).append(clean)
    return dataclasses.replace(Vocabulary.from_lists(things, stuff), source=str(dataset.json_path))


def map_categories(dataset: PanopticDataset, vocab: Vocabulary) -> list[int]:
    """Vocabulary class index of each dataset category.

    Categories match a class by name or synonym (case-insensitive, COCO suffixes such as
    ``-merged`` ignored). When names do not all match but the vocabulary has exactly as many
    things and stuff classes as the dataset, the k-th dataset thing maps to the k-th
    vocabulary thing (likewise for stuff) -- how the shipped COCO / ADE20K files are written.
    """
    lookup: dict[str, int] = {}
    for k, synonyms in enumerate(vocab.synonyms):
        for s in synonyms:
            lookup.setdefault(s.lower(), k)
            lookup.setdefault(_normalise(s), k)
    mapping: list[Optional[int]] = []
    for c in dataset.categories:
        mapping.append(lookup.get(c["name"].lower(), lookup.get(_normalise(c["name"]))))
    for c, thing, k in zip(dataset.categories, dataset.is_thing, mapping):
        if k is not None and vocab.is_thing[k] != thing:
            raise DenseVLMError(
                f"category '{c['name']}' is {'a thing' if thing else 'stuff'} in {dataset.json_path} "
                f"but '{vocab.names[k]}' is in the {'things' if vocab.is_thing[k] else 'stuff'} section of the vocabulary"
            )
    if all(k is not None for k in mapping):
        return [int(k) for k in mapping]
    ds_things = [i for i, t in enumerate(dataset.is_thing) if t]
    ds_stuff = [i for i, t in enumerate(dataset.is_thing) if not t]
    if len(ds_things) == vocab.num_things and len(ds_stuff) == len(vocab) - vocab.num_things:
        positional = [0] * len(dataset.categories)
        for i, k in zip(ds_things, vocab.thing_indices):
            positional[i] = k
        for i, k in zip(ds_stuff, vocab.stuff_indices):
            positional[i] = k
        return positional
    missing = [c["name"] for c, k in zip(dataset.categories, mapping) if k is None]
    raise DenseVLMError(
        f"{len(missing)} categories of {dataset.json_path} are not in the vocabulary (e.g. {', '.join(missing[:5])}); "
        "add them (as names or synonyms) to the vocabulary file"
    )


class _Items(torch.utils.data.Dataset):
    """Decodes and prepares one image per item (runs in DataLoader workers)."""

    def __init__(self, dataset: PanopticDataset, indices: Sequence[int], mapping: list[int], cfg: EvalConfig,
                 size: int, patch: int, mean, std) -> None:
        self.dataset, self.indices, self.mapping, self.cfg = dataset, list(indices), mapping, cfg
        self.size, self.patch, self.mean, self.std = size, patch, mean, std

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index = self.indices[i]
        try:
            return self._prepare(index)
        except DenseVLMError as e:
            return {"index": index, "error": str(e)}

    def _prepare(self, index: int) -> dict[str, Any]:
        sample = self.dataset.load(index)
        cfg = self.cfg
        try:
            x, plan = letterbox(sample.image, self.size, self.patch, self.mean, self.std, square=cfg.square)
        except DenseVLMError as e:
            raise DenseVLMError(f"{self.dataset.image_path(index)}: {e}") from None
        ids = torch.from_numpy(sample.ids)
        category_index = self.dataset.category_index
        sem = torch.full(ids.shape, -1, dtype=torch.int64)
        boxes, labels, thing_flags, masks = [], [], [], []
        for seg in sample.segments:
            label = self.mapping[category_index[seg["category_id"]]]
            mask = ids == seg["id"]
            sem[mask] = label
            if len(boxes) >= cfg.max_segments:
                continue
            isthing = self.dataset.is_thing[category_index[seg["category_id"]]]
            if isthing and "bbox" in seg:
                bx, by, bw, bh = (float(v) for v in seg["bbox"])
            else:
                ys, xs = torch.nonzero(mask, as_tuple=True)
                bx, by = float(xs.min()), float(ys.min())
                bw, bh = float(xs.max()) - bx + 1, float(ys.max()) - by + 1
            if bw * bh < cfg.min_box_side**2 or bw * bh > cfg.max_box_side**2:
                continue
            boxes.append([bx, by, bx + bw, by + bh])
            labels.append(label)
            thing_flags.append(isthing)
            masks.append(mask)
        boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        weights = self._token_weights(masks, plan)
        content = F.interpolate(sem[None, None].float(), size=(plan.height, plan.width), mode="nearest")[0, 0].long()
        return {
            "index": index,
            "input": x,
            "plan": plan,
            "boxes": boxes_t,
            "labels": torch.tensor(labels, dtype=torch.int64),
            "thing": torch.tensor(thing_flags, dtype=torch.bool),
            "weights": weights,
            "sem": content,
            "image": np.asarray(sample.image) if self.cfg.crops else None,
            "unlisted_pixels": sample.unlisted_pixels,
        }

    def _token_weights(self, masks: list[torch.Tensor], plan: Letterbox) -> torch.Tensor:
        """``[N, h, w]`` token weights of original-size masks, 16 input-size masks at a time."""
        p = self.patch
        out = torch.zeros(len(masks), plan.input_height // p, plan.input_width // p)
        for start in range(0, len(masks), 16):
            chunk = torch.stack(masks[start : start + 16])
            out[start : start + chunk.shape[0]] = mask_token_weights(plan.masks_to_input(chunk), p)
        return out


def _shard(n: int) -> range:
    """The indices this process evaluates: rank r of w takes r, r + w, ... (no padding, no repeats)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return range(torch.distributed.get_rank(), n, torch.distributed.get_world_size())
    return range(n)


def evaluate(
    model,
    dataset: PanopticDataset,
    vocab: Optional[Vocabulary] = None,
    cfg: Optional[EvalConfig] = None,
    progress: bool = True,
) -> EvalResult:
    """Run the protocol over ``dataset``.

    Args:
        model: a :class:`~densevlm.model.DenseModel` (anything with ``encode_dense``,
            ``encode_crops``, ``embed_vocabulary``, ``patch_size``, ``input_size`` and ``spec``).
        vocab: class names and sections; default the dataset's own categories.
        cfg: protocol settings.

    Returns:
        Metrics summed over every process when run under ``torchrun``.
    """
    cfg = cfg or EvalConfig()
    vocab = vocab or dataset_vocabulary(dataset)
    mapping = map_categories(dataset, vocab)
    size = cfg.size or model.input_size
    is_thing = torch.tensor(vocab.is_thing)
    counters = {name: RegionCounter(is_thing) for name in ("box", "mask", "crop")}
    seg_counter = SegmentationCounter(len(vocab))
    stats = torch.zeros(3, dtype=torch.int64)  # images, segments, skipped
    unlisted = torch.zeros(2, dtype=torch.int64)  # images, pixels with PNG ids the JSON does not list
    skipped: list[str] = []
    items = _Items(dataset, _shard(len(dataset)), mapping, cfg, size, model.patch_size, model.spec.mean, model.spec.std)
    loader = torch.utils.data.DataLoader(items, batch_size=cfg.batch_size, num_workers=cfg.workers, collate_fn=list)
    from tqdm import tqdm

    started = time.perf_counter()
    with torch.inference_mode():
        text = model.embed_vocabulary(vocab, templates=cfg.templates).float()
        bar = tqdm(loader, desc="eval", unit="batch", disable=None if progress else True)
        for batch in bar:
            good = []
            for item in batch:
                if "error" in item:
                    if not cfg.skip_bad:
                        raise DenseVLMError(item["error"])
                    skipped.append(item["error"])
                    log.warning("skipped: %s", item["error"])
                    stats[2] += 1
                else:
                    good.append(item)
            if not good:
                continue
            _evaluate_batch(model, good, text, cfg, counters, seg_counter)
            stats[0] += len(good)
            stats[1] += sum(int(it["labels"].numel()) for it in good)
            unlisted += torch.tensor([sum(it["unlisted_pixels"] > 0 for it in good), sum(it["unlisted_pixels"] for it in good)])
    tensors = [t for c in counters.values() for t in c.tensors()] + seg_counter.tensors() + [stats, unlisted]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for t in tensors:
            torch.distributed.all_reduce(t)
    if int(stats[0]) == 0:
        raise DenseVLMError(f"{dataset.json_path}: no image could be evaluated ({int(stats[2])} skipped)")
    warning = dataset.ground_truth_warning(int(unlisted[0]), int(unlisted[1]))
    if warning and _shard(1):  # rank 0 only
        log.warning("%s", warning)
    return eval_result(vocab, counters, seg_counter, cfg, skipped, n_images=int(stats[0]), n_segments=int(stats[1]),
                       n_skipped=int(stats[2]), size=size, wall_s=round(time.perf_counter() - started, 2),
                       model=model.spec.source, data=str(dataset.json_path), vocabulary=vocab.source,
                       vocabulary_adapted=vocab.adaptation is not None)


def eval_result(vocab: Vocabulary, counters: dict[str, RegionCounter], seg: SegmentationCounter, cfg: EvalConfig,
                skipped: list[str], **extra: Any) -> EvalResult:
    """The :class:`EvalResult` of filled counters: each kind's metrics (crop only with ``cfg.crops``), the
    box features' ``fg_bias`` / ``bg_bias``, mIoU with ``cfg.segmentation``, then ``extra``; per-class
    rows and confusion matrices."""
    kinds = {name: c for name, c in counters.items() if name != "crop" or cfg.crops}
    metrics: dict[str, Any] = {}
    for name, counter in kinds.items():
        metrics.update(counter.summary(name))
    metrics["fg_bias"], metrics["bg_bias"] = metrics["box.fg_bias"], metrics["box.bg_bias"]
    if cfg.segmentation:
        metrics.update(seg.summary())
    metrics.update(extra)
    confusion = {name: c.confusion.tolist() for name, c in kinds.items()}
    return EvalResult(metrics, per_class_rows(vocab, counters, seg, cfg), confusion, list(vocab.names),
                      list(vocab.is_thing), skipped)


def per_class_rows(vocab: Vocabulary, counters: dict[str, RegionCounter], seg: SegmentationCounter, cfg: EvalConfig) -> list[dict[str, Any]]:
    """One row per class: segment count, box/mask/crop accuracies, share predicted as thing, IoU."""
    rows = []
    iou = seg.iou() if cfg.segmentation else None
    tables = {name: c.per_class(vocab.names) for name, c in counters.items() if name != "crop" or cfg.crops}
    for k, name in enumerate(vocab.names):
        row: dict[str, Any] = {"class": name, "isthing": vocab.is_thing[k], "n": tables["box"][k]["n"]}
        for kind, table in tables.items():
            row[f"{kind}_acc1"] = table[k]["acc1"]
            row[f"{kind}_acc5"] = table[k]["acc5"]
            row[f"{kind}_pred_thing"] = table[k]["pred_thing"]
        if iou is not None:
            row["iou"] = float(iou[k])
        rows.append(row)
    return rows


def _evaluate_batch(model, items, text, cfg, counters, seg_counter) -> None:
    from densevlm.inference.maps import pixel_predictions
    from densevlm.model import pad_batch

    patch = model.patch_size
    x = pad_batch([it["input"] for it in items]).to(model.device)
    dense = model.encode_dense(x).float()
    for b, it in enumerate(items):
        plan = it["plan"]
        # this item's own token grid (pad_batch padded its input right and bottom to the batch's largest)
        own = dense[b, :, : plan.input_height // patch, : plan.input_width // patch]
        labels = it["labels"]
        if labels.numel():
            box_feats = roi_pool(own[None], [plan.to_input(it["boxes"])], patch)
            counters["box"].update(similarity.cosine(box_feats, text), labels)
            mask_feats = weighted_pool(own, it["weights"].to(dense.device))
            counters["mask"].update(similarity.cosine(mask_feats, text), labels)
            if cfg.crops:
                image = Image.fromarray(it["image"])
                counters["crop"].update(crop_logits(model, image, it["boxes"], it["thing"], cfg, text), labels)
        if cfg.segmentation:
            predicted, _ = pixel_predictions(own, text, 1.0, plan)  # the argmax ignores the logit scale
            seg_counter.update(predicted.cpu(), it["sem"])


def crop_logits(model, image: Image.Image, boxes: torch.Tensor, thing: torch.Tensor, cfg: EvalConfig,
                text: torch.Tensor) -> torch.Tensor:
    """``[N, K]`` cosines of each box's crop embedding (``[N, 4]`` XYXY pixels of ``image``; thing
    boxes ``[N]`` enlarged by ``cfg.thing_context``, stuff boxes tight) with the ``[K, C]`` classes."""
    feats = torch.zeros(boxes.shape[0], text.shape[1], device=text.device)
    for flag, context in ((True, cfg.thing_context), (False, 1.0)):
        sel = (thing == flag).nonzero(as_tuple=True)[0]
        if sel.numel():
            feats[sel] = model.encode_crops(image, boxes[sel], context=context).float()
    return similarity.cosine(feats, text)


def make_validator(data: str, vocab_path: Optional[str] = None, limit: Optional[int] = None,
                   cfg: Optional[EvalConfig] = None):
    """The protocol as a callback ``model -> evaluation JSON`` (what the trainer validates with)."""
    from densevlm.vocab import load_vocabulary

    dataset = PanopticDataset(data, limit=limit)
    vocab = load_vocabulary(vocab_path) if vocab_path else None

    def validate(model) -> dict[str, Any]:
        return evaluate(model, dataset, vocab, cfg or EvalConfig(), progress=False).to_json()

    return validate
