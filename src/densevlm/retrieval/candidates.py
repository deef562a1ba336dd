"""Run the teacher over an image collection and write its candidates as JSONL.

The file feeds the review page (``densevlm review init``). Line 1 is a header, then one line
per region::

    {"kind": "header", "version": 1, "teacher": ..., "images": "/abs/dir", "vocabulary":
     {"things": [["bolt"], ["scratch", "scuff"]], "stuff": [...], "defects": ["scratch"]}, "tau": 14.3,
     "threshold": 0.3, "region_source": "grid" | "segments" | "boxes", "features": "crop"}
    {"kind": "region", "id": "000012.png#3", "image": "000012.png", "width": 64, "height": 64,
     "box": [x1, y1, x2, y2], "mask": null | {"size": [h, w], "counts": "..."},
     "candidates": [{"category": "bolt", "prob": 0.81, "thing": true}, ...],
     "confidence": 0.81, "thing": true, "kept": true, "logits": [...]}

Boxes are XYXY in original image pixels. The header's ``tau`` is the logit scale the teacher
used (the key keeps its version-1 name). ``logits`` (``logit_scale * cos`` over the whole
vocabulary) is written when the vocabulary has at most ``max_logits`` classes, or always with
``full_logits``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from densevlm.data.images import FileListSource, ImageSource
from densevlm.errors import DenseVLMError
from densevlm.fileio import atomic_write
from densevlm.regions import similarity
from densevlm.regions.rle import encode_rle
from densevlm.regions.sources import grid_boxes, segment_regions
from densevlm.retrieval.teacher import RetrievalConfig, RetrievalStats, classify_regions, teacher_region_features
from densevlm.vocab.vocabulary import Vocabulary

__all__ = ["write_candidates", "header_record"]

log = logging.getLogger(__name__)

# a region's id: NAME#N for grid cells (as in the first releases), NAME#segN for colour segments and
# NAME#boxX1,Y1,X2,Y2 for given boxes (their coordinates: a second boxes file adds its new boxes), so one
# database can hold every kind for one image
KEY_PREFIX = {"grid": "", "segments": "seg"}


def _key(region_source: str, j: int, given: Optional[np.ndarray]) -> str:
    if given is not None:
        return "box" + ",".join(f"{float(v):g}" for v in given[j])
    return f"{KEY_PREFIX[region_source]}{j}"


def header_record(teacher, vocab: Vocabulary, images_root: Optional[str], cfg: RetrievalConfig, logit_scale: float,
                  region_source: str) -> dict[str, Any]:
    return {
        "kind": "header", "version": 1, "teacher": teacher.spec.source, "images": images_root,
        "vocabulary": vocab.sections(), "tau": logit_scale, "threshold": cfg.threshold,
        "region_source": region_source, "features": cfg.features,
    }


def write_candidates(
    teacher,
    source: ImageSource,
    vocab: Vocabulary,
    out: str | Path,
    cfg: RetrievalConfig,
    region_source: str = "grid",
    max_boxes: Optional[int] = None,
    size: Optional[int] = None,
    seed: int = 0,
    limit: Optional[int] = None,
    full_logits: bool = False,
    max_logits: int = 64,
    progress: bool = True,
    boxes: Optional[Mapping[str, np.ndarray]] = None,
) -> dict[str, Any]:
    """Label the regions of every image with the teacher; returns the retrieval statistics.

    Args:
        teacher: a frozen :class:`~densevlm.model.DenseModel`.
        source: the images (a folder-like source, so the review page can show them).
        region_source: ``grid`` or ``segments`` (segments also get RLE masks); ``boxes`` when
            ``boxes`` is given.
        size: longest side the teacher sees (default its input size).
        boxes: ``{source.name(i): [N, 4] XYXY original pixels}``: the regions are these boxes
            (e.g. objects from a labelling tool or a detector, checked against their image by
            the caller), and only images with boxes are labelled.
    """
    from tqdm import tqdm

    cfg.check()
    size = size or teacher.input_size
    logit_scale = float(cfg.logit_scale or teacher.logit_scale)
    class_is_thing = torch.tensor(vocab.is_thing)
    text = teacher.embed_vocabulary(vocab).float()
    stats = RetrievalStats(vocab.names)
    root = str(Path(source.root).resolve()) if isinstance(source, FileListSource) else None
    n = len(source) if limit is None else min(limit, len(source))
    if boxes is not None:
        region_source = "boxes"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    skipped = without_boxes = 0
    started = time.perf_counter()

    def write(tmp: str) -> None:
        nonlocal skipped, without_boxes
        with open(tmp, "w", encoding="utf-8") as f, torch.inference_mode():
            f.write(json.dumps(header_record(teacher, vocab, root, cfg, logit_scale, region_source)) + "\n")
            for index in tqdm(range(n), desc="retrieve", unit="img", disable=None if progress else True):
                given = None if boxes is None else boxes.get(source.name(index))
                if boxes is not None and (given is None or not len(given)):
                    without_boxes += 1
                    continue
                try:
                    image = source.load(index)  # its errors name the file
                except Exception as e:  # unreadable images are reported and skipped
                    log.warning("skipped: %s", e)
                    skipped += 1
                    continue
                try:
                    x, plan = teacher.prepare(image, size=size, square=True)
                except DenseVLMError as e:  # too small or thin to recognise
                    log.warning("skipped %s: %s", source.name(index), e)
                    skipped += 1
                    continue
                content = x[:, : plan.height, : plan.width]
                rng = np.random.default_rng([seed, index])
                masks = None
                if given is not None:
                    boxes_in = plan.to_input(torch.as_tensor(np.asarray(given, np.float32)))
                elif region_source == "segments":
                    raw = np.asarray(image.resize((plan.width, plan.height)), dtype=np.float32) / 255.0
                    raw = torch.from_numpy(raw).permute(2, 0, 1)
                    boxes_in, masks = segment_regions(raw)
                    if max_boxes is not None:
                        boxes_in, masks = boxes_in[:max_boxes], masks[:max_boxes]
                else:
                    boxes_in = grid_boxes(content.shape[-1], content.shape[-2], rng, max_boxes)
                feats = teacher_region_features(teacher, x[None].to(teacher.device), [boxes_in.to(teacher.device)],
                                                cfg.features, cfg.context)
                r = classify_regions(feats, text, class_is_thing, logit_scale, cfg.threshold, cfg.features)
                stats.update(r)
                name = source.name(index)
                top_probs, top_classes = similarity.top_k(r.probs, cfg.top_k)
                for j in range(boxes_in.shape[0]):
                    box = plan.to_original(boxes_in[j]).tolist()
                    box = [min(max(v, 0.0), lim) for v, lim in zip(box, (image.width, image.height) * 2)]
                    record = {
                        "kind": "region", "id": f"{name}#{_key(region_source, j, given)}", "image": name,
                        "width": image.width, "height": image.height,
                        "box": [round(v, 2) for v in box],
                        "mask": None,
                        "candidates": [
                            {"category": vocab.names[int(k)], "prob": round(float(p), 4),
                             "thing": bool(vocab.is_thing[int(k)])}
                            for p, k in zip(top_probs[j], top_classes[j])
                        ],
                        "confidence": round(float(r.confidence[j]), 4),
                        "thing": bool(r.is_thing[j]),
                        "kept": bool(r.kept[j]),
                    }
                    if masks is not None:
                        full = torch.nn.functional.interpolate(masks[j][None, None].float(),
                                                               size=(image.height, image.width), mode="nearest")
                        record["mask"] = encode_rle(full[0, 0].numpy() > 0.5)
                    if full_logits or len(vocab) <= max_logits:
                        record["logits"] = [round(float(v), 3) for v in r.logits[j]]
                    f.write(json.dumps(record) + "\n")

    atomic_write(out, write)
    summary = {**stats.summary(), "images": n - skipped - without_boxes, "skipped": skipped,
               "wall_s": time.perf_counter() - started, "logit_scale": logit_scale, "out": str(out)}
    return summary
