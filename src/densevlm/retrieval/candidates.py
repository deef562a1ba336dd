"""Run the teacher over an image collection and write its candidates as JSONL.

The file feeds the review page (``densevlm review init``). Line 1 is a header, then one line
per region::

    {"kind": "header", "version": 1, "teacher": ..., "images": "/abs/dir", "vocabulary":
     {"things": [["bolt"], ["scratch", "scuff"]], "stuff": [...], "defects": ["scratch"]}, "tau": 14.3,
     "threshold": 0.3, "region_source": "grid" | "segments" | "boxes", "features": "crop",
     "settings": {"size": 64, "seed": 0, "max_boxes": null, "limit": null, "top_k": 5, "context": 1.0,
                  "logits": true, "boxes": null | "<hash of the given boxes>", "image_list": "<hash>"}}
    {"kind": "region", "id": "000012.png#3", "image": "000012.png", "width": 64, "height": 64,
     "box": [x1, y1, x2, y2], "mask": null | {"size": [h, w], "counts": "..."},
     "candidates": [{"category": "bolt", "prob": 0.81, "thing": true}, ...],
     "confidence": 0.81, "thing": true, "kept": true, "logits": [...]}

Boxes are XYXY in original image pixels. The header's ``tau`` is the logit scale the teacher
used (the key keeps its version-1 name); its ``settings`` are what a resumed run must repeat.
``logits`` (``logit_scale * cos`` over the whole vocabulary) is written when the vocabulary has
at most ``max_logits`` classes, or always with ``full_logits``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from densevlm.data.images import FileListSource, ImageSource
from densevlm.errors import DenseVLMError
from densevlm.fileio import open_exclusive, read_progress
from densevlm.regions import similarity
from densevlm.regions.rle import encode_rle
from densevlm.regions.sources import grid_boxes, segment_regions
from densevlm.retrieval.teacher import RetrievalConfig, RetrievalStats, classify_regions, teacher_region_features
from densevlm.vocab.vocabulary import Vocabulary

__all__ = ["write_candidates", "header_record", "partial_path"]

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


def partial_path(out: str | Path) -> Path:
    """Where ``write_candidates`` keeps the lines of an unfinished run of ``out``: ``OUT.partial``."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


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
    resume: bool = False,
) -> dict[str, Any]:
    """Label the regions of every image with the teacher; returns the retrieval statistics.

    The lines go to ``OUT.partial`` (:func:`partial_path`) as each image is done, and the file
    becomes ``out`` when every image is; an interrupted or failed run leaves ``OUT.partial``,
    which ``resume=True`` continues. A resumed run redoes the last image of the partial file
    (its lines may be incomplete) and goes on from there; grid splits are seeded per image, so
    the result is the file an uninterrupted run writes.

    Args:
        teacher: a frozen :class:`~densevlm.model.DenseModel`.
        source: the images (a folder-like source, so the review page can show them).
        region_source: ``grid`` or ``segments`` (segments also get RLE masks); ``boxes`` when
            ``boxes`` is given.
        size: longest side the teacher sees (default its input size).
        boxes: ``{source.name(i): [N, 4] XYXY original pixels}``: the regions are these boxes
            (e.g. objects from a labelling tool or a detector, checked against their image by
            the caller), and only images with boxes are labelled.
        resume: continue ``OUT.partial``.

    Raises:
        DenseVLMError: ``resume`` without an ``OUT.partial``, or one written with other
            settings, teacher, vocabulary or images (named in one line); another process writing
            ``OUT.partial``; no image that could be labelled; a write that fails.
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
    header = header_record(teacher, vocab, root, cfg, logit_scale, region_source)
    names = [source.name(i) for i in range(n)]
    header["settings"] = {"size": size, "seed": seed, "max_boxes": max_boxes, "limit": limit, "top_k": cfg.top_k,
                          "context": cfg.context, "logits": bool(full_logits or len(vocab) <= max_logits),
                          "boxes": None if boxes is None else _fingerprint(boxes),
                          "image_list": _digest("\0".join(names).encode("utf-8"))}
    out = Path(out)
    partial = partial_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if resume and not partial.is_file():
        raise DenseVLMError(f"{partial}: no interrupted retrieve to resume (leave out --resume)")
    started = time.perf_counter()
    f = open_exclusive(partial, "retrieve")
    try:
        done = _resume(f.read(), partial, header, names, stats) if resume else None
    except BaseException:
        f.close()
        raise
    try:
        with f, torch.inference_mode():
            first, written, images = done or (0, 0, 0)
            f.seek(written)
            f.truncate()
            if done is None:
                f.write(json.dumps(header).encode("ascii") + b"\n")
            for index in tqdm(range(first, n), desc="retrieve", unit="img", initial=first, total=n,
                              disable=None if progress else True):
                given = None if boxes is None else boxes.get(names[index])
                if boxes is not None and (given is None or not len(given)):
                    continue
                try:
                    image = source.load(index)  # its errors name the file
                except Exception as e:  # unreadable images are reported and skipped
                    log.warning("skipped: %s", e)
                    continue
                records = _image_records(teacher, image, names[index], vocab, text, class_is_thing, cfg,
                                         logit_scale, region_source, size, np.random.default_rng([seed, index]),
                                         max_boxes, given, header["settings"]["logits"], stats)
                if records is None:
                    continue
                f.write("".join(json.dumps(r) + "\n" for r in records).encode("ascii"))
                f.flush()
                images += 1
            os.fsync(f.fileno())
            if images:
                os.replace(partial, out)
    except OSError as e:
        raise DenseVLMError(f"{partial}: cannot write ({e.strerror or type(e).__name__})") from None
    except BaseException:
        log.warning("%s: the images done so far are in %s; --resume continues from there", out, partial)
        raise
    boxed = n if boxes is None else sum(len(boxes.get(name, ())) > 0 for name in names)
    if not images:
        partial.unlink()
        raise DenseVLMError(f"{source.root}: none of the {boxed} images could be labelled (each named above); "
                            f"nothing written to {out}")
    return {**stats.summary(), "images": images, "skipped": boxed - images,  # labelled or skipped, each
            "wall_s": time.perf_counter() - started, "logit_scale": logit_scale, "out": str(out)}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _fingerprint(boxes: Mapping[str, np.ndarray]) -> str:
    """A short hash of a ``{name: [N, 4]}`` box mapping (what a resumed run must be given again)."""
    return _digest(b"".join(name.encode("utf-8") + b"\0" + np.asarray(boxes[name], np.float64).tobytes()
                            for name in sorted(boxes)))


# the option behind each header key, for the message of a resume with other settings
_FLAGS = {"teacher": "--teacher", "images": "--images", "vocabulary": "--vocab", "tau": "--logit-scale",
          "threshold": "--threshold", "region_source": "--regions / --boxes", "features": "--features",
          "size": "--size", "seed": "--seed", "max_boxes": "--max-boxes", "limit": "--limit", "top_k": "--top-k",
          "logits": "--full-logits", "boxes": "--boxes",
          "image_list": "image files (some were added to or removed from --images since)"}
# the settings whose old and new values the message shows (the others are paths or hashes)
_VALUED = {"tau", "threshold", "region_source", "features", "size", "seed", "max_boxes", "limit", "top_k", "logits"}


def _shown(value: Any) -> str:
    return "not given" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _resume(data: bytes, partial: Path, header: dict[str, Any], names: list[str],
            stats: RetrievalStats) -> Optional[tuple[int, int, int]]:
    """``(index of the image to redo, byte offset where its lines begin, images before it)`` in the
    interrupted run's ``data``, whose regions before that image are added to ``stats``; None
    when it holds no finished line (stopped before its header was written: start again)."""
    records, ends = read_progress(data, partial, "retrieve")
    if not records:
        log.info("%s: stopped before its header was written; starting again", partial)
        return None
    old, regions = records[0], records[1:]
    if not isinstance(old, dict) or old.get("kind") != "header":
        raise DenseVLMError(f"{partial}: not a candidates file of densevlm retrieve; pass --overwrite to start again")
    flat_old = {**old, **(old.get("settings") or {})}
    flat_new = {**header, **header["settings"]}
    changed = [k for k in flat_new if k != "settings" and flat_old.get(k) != flat_new[k]]
    if "teacher" in changed and "tau" in changed:
        changed.remove("tau")  # the logit scale is the teacher's own unless given
    if changed:
        said = [_FLAGS.get(k, k) + (f" ({_shown(flat_old.get(k))} then, {_shown(flat_new[k])} now)"
                                    if k in _VALUED else "") for k in changed]
        raise DenseVLMError(f"{partial}: the interrupted run had other {'; '.join(said)}; resume with the same "
                            "settings and images, or pass --overwrite to start again")
    index = {name: i for i, name in enumerate(names)}
    try:
        last = regions[-1]["image"] if regions else None
        keep = [r for r in regions if r["image"] != last]
        for r in keep:  # the label is the best candidate of the region's section (split features: maybe not the first)
            label = next((c for c in r["candidates"] if c["thing"] == r["thing"]), r["candidates"][0])["category"]
            stats.count(r["kept"], r["thing"], label)
    except (KeyError, TypeError, IndexError):
        raise DenseVLMError(f"{partial}: holds a region line retrieve did not write; "
                            "pass --overwrite to start again") from None
    offset = ends[len(keep)]  # past the header and the kept regions
    done = len({r["image"] for r in keep})
    log.info("resuming %s: %d images done", partial, done)
    return (0 if last is None else index[last]), offset, done


def _image_records(teacher, image, name: str, vocab: Vocabulary, text: torch.Tensor, class_is_thing: torch.Tensor,
                   cfg: RetrievalConfig, logit_scale: float, region_source: str, size: int, rng: np.random.Generator,
                   max_boxes: Optional[int], given: Optional[np.ndarray], logits: bool,
                   stats: RetrievalStats) -> Optional[list[dict[str, Any]]]:
    """The candidates lines of one image (None, with a warning, when it is too small or thin)."""
    try:
        x, plan = teacher.prepare(image, size=size, square=True)
    except DenseVLMError as e:  # too small or thin to recognise
        log.warning("skipped %s: %s", name, e)
        return None
    content = x[:, : plan.height, : plan.width]
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
    top_probs, top_classes = similarity.top_k(r.probs, cfg.top_k)
    records = []
    for j in range(boxes_in.shape[0]):
        box = plan.to_original(boxes_in[j]).tolist()
        box = [min(max(v, 0.0), lim) for v, lim in zip(box, (image.width, image.height) * 2)]
        record = {
            "kind": "region", "id": f"{name}#{_key(region_source, j, given)}", "image": name,
            "width": image.width, "height": image.height,
            "box": [round(v, 2) for v in box],
            "mask": None,
            "candidates": [
                {"category": vocab.names[int(k)], "prob": round(float(p), 4), "thing": bool(vocab.is_thing[int(k)])}
                for p, k in zip(top_probs[j], top_classes[j])
            ],
            "confidence": round(float(r.confidence[j]), 4),
            "thing": bool(r.is_thing[j]),
            "kept": bool(r.kept[j]),
        }
        if masks is not None:
            full = torch.nn.functional.interpolate(masks[j][None, None].float(), size=(image.height, image.width),
                                                   mode="nearest")
            record["mask"] = encode_rle(full[0, 0].numpy() > 0.5)
        if logits:
            record["logits"] = [round(float(v), 3) for v in r.logits[j]]
        records.append(record)
    return records
