"""Segmenting many files: what ``densevlm segment`` runs.

A torch DataLoader decodes and letterboxes the images in worker processes (every image to a
``size x size`` square, so any aspect ratios batch together, plus a display-size copy for the
overlay, so full-resolution pixels never travel to the main process); the main process runs
the model a batch at a time and writes each image's outputs. The run is resumable: an image
whose three outputs exist (and whose JSON reads back) is skipped unless ``overwrite``. A file
that cannot be read or written is skipped with one warning line and an ``error`` row in the
summary; the run goes on.

Workers are forked where the platform allows it, so the model (whose ``prepare`` they call)
is shared rather than pickled; elsewhere it is pickled into each worker.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from densevlm.errors import DenseVLMError
from densevlm.imaging import open_image
from densevlm.inference.io import InputImage, finished_json, write_outputs, write_summary
from densevlm.inference.overlay import display_image
from densevlm.inference.result import SegmentResult
from densevlm.dense import as_array
from densevlm.inference.pipeline import box_logits
from densevlm.inference.segment import predict
from densevlm.vocab import Vocabulary

__all__ = ["RunConfig", "RunSummary", "segment_files"]

log = logging.getLogger(__name__)

_TOP_CLASSES = 3


@dataclass
class RunConfig:
    """Settings of a folder run.

    Attributes:
        size: input side in pixels (images are letterboxed to ``size x size``).
        top_k: candidates per segment.
        min_area: speck threshold in original pixels (None: half a token).
        batch_size: images per forward pass.
        workers: decoding processes (0: decode in the main process).
        overwrite: redo images whose outputs exist.
        overlay_max_side: longest side of the drawn image in the overlay.
        progress: show a progress bar (and route log lines through it).
        model_name: written to each JSON.
    """

    size: int
    top_k: int = 5
    min_area: Optional[int] = None
    batch_size: int = 8
    workers: int = 2
    overwrite: bool = False
    overlay_max_side: int = 2048
    progress: bool = False
    model_name: str = ""


@dataclass
class RunSummary:
    """One row per input image (in input order) and the run's wall time in seconds."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r["status"] == status)


class _Decoded(torch.utils.data.Dataset):
    """Decodes one file per item (in a worker): model input, letterbox, display copy, or an error."""

    def __init__(self, images: Sequence[InputImage], prepare: Any, size: int, overlay_max_side: int) -> None:
        self.images = list(images)
        self.prepare = prepare
        self.size = size
        self.overlay_max_side = overlay_max_side

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.images[i].path
        try:
            pil = open_image(path)
            x, plan = self.prepare(pil, self.size, square=True)
            display = display_image(pil, self.overlay_max_side)
            return {"index": i, "input": x, "plan": plan, "display": display}
        except DenseVLMError as e:
            return {"index": i, "error": str(e)}
        except (OSError, ValueError, MemoryError) as e:
            return {"index": i, "error": str(DenseVLMError(f"{path}: cannot decode ({type(e).__name__}: {e})"))}


def _collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _top_classes(shares: Sequence[tuple[str, float]]) -> str:
    return "; ".join(f"{name}:{100.0 * share:.0f}%" for name, share in shares[:_TOP_CLASSES])


def _skipped_row(image: InputImage, doc: dict[str, Any]) -> dict[str, Any]:
    shares = [(c.get("category", "?"), float(c.get("share", 0.0))) for c in doc.get("class_areas", [])]
    return {
        "file": str(image.path), "name": image.name, "status": "skipped", "reason": "outputs exist (--overwrite redoes them)",
        "segments": len(doc.get("segments", [])), "top_classes": _top_classes(shares), "seconds": 0.0,
    }


def _error_row(image: InputImage, reason: str, seconds: float = 0.0) -> dict[str, Any]:
    return {"file": str(image.path), "name": image.name, "status": "error", "reason": reason,
            "segments": 0, "top_classes": "", "seconds": round(seconds, 3)}


def segment_files(
    model: Any,
    images: Sequence[InputImage],
    vocab: Vocabulary,
    out_dir: str | Path,
    config: RunConfig,
    boxes: Optional[dict[str, tuple[np.ndarray, list[str]]]] = None,
) -> RunSummary:
    """Segment ``images`` into ``out_dir`` and write ``out_dir/summary.csv``.

    Args:
        model: see :mod:`densevlm.inference.segment` for the interface used.
        images: from :func:`~densevlm.inference.io.collect_inputs`.
        vocab: the classes.
        config: run settings.
        boxes: ``{image name: ([N, 4] XYXY original pixels, where)}``; when given, every image is
            segmented in box mode (an image without boxes gets no segments).

    Returns:
        The summary (also written as CSV, even when the run is interrupted).
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DenseVLMError(f"{out_dir}: cannot create the output folder ({e.strerror or type(e).__name__})") from None
    started = time.perf_counter()
    rows: dict[int, dict[str, Any]] = {}
    todo: list[int] = []
    for i, image in enumerate(images):
        doc = None if config.overwrite else finished_json(out_dir, image.name)
        if doc is None:
            todo.append(i)
        else:
            rows[i] = _skipped_row(image, doc)
    if rows:
        log.info("%d of %d images already have outputs in %s; skipping them (--overwrite redoes them)",
                 len(rows), len(images), out_dir)
    summary = RunSummary()
    try:
        if todo:
            _run(model, [images[i] for i in todo], todo, vocab, out_dir, config, boxes, rows)
    finally:
        summary.rows = [rows[i] for i in sorted(rows)]
        summary.seconds = time.perf_counter() - started
        write_summary(out_dir / "summary.csv", summary.rows)
    return summary


def _run(model: Any, images: list[InputImage], indices: list[int], vocab: Vocabulary, out_dir: Path, config: RunConfig,
         boxes: Optional[dict[str, tuple[np.ndarray, list[str]]]], rows: dict[int, dict[str, Any]]) -> None:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    dataset = _Decoded(images, model.prepare, config.size, config.overlay_max_side)
    context = None
    if config.workers > 0 and "fork" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("fork")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, num_workers=config.workers, collate_fn=_collate,
        worker_init_fn=_worker_init if config.workers > 0 else None, multiprocessing_context=context,
    )
    temperature = float(model.logit_scale)
    patch = int(model.patch_size)
    # with a bar on screen, log lines go through tqdm so they do not break it
    redirect = contextlib.nullcontext()
    if config.progress:
        redirect = logging_redirect_tqdm(loggers=[logging.getLogger("densevlm")])
    with torch.inference_mode(), redirect:
        text = model.embed_vocabulary(vocab)
        device = text.device
        text_array = as_array(text)
        bar = tqdm(total=len(images), desc="segment", unit="img", disable=None if config.progress else True)
        waited = time.perf_counter()
        for batch in loader:
            good = []
            for item in batch:
                if "error" in item:
                    log.warning("skipped %s", item["error"])
                    rows[indices[item["index"]]] = _error_row(images[item["index"]], item["error"])
                    bar.update(1)
                else:
                    good.append(item)
            if good:
                x = torch.stack([item["input"] for item in good]).to(device)
                dense = model.encode_dense(x)
                box_features = _box_features(model, dense, good, images, boxes, text)
                dense = as_array(dense)
                shared = (time.perf_counter() - waited) / len(good)
                for j, item in enumerate(good):
                    image = images[item["index"]]
                    rows[indices[item["index"]]] = _finish(
                        dense[j], text_array, item, image, vocab, out_dir, config, temperature, patch,
                        None if box_features is None else box_features[j], boxes, shared,
                    )
                    bar.update(1)
            waited = time.perf_counter()
        bar.close()


def _box_features(model: Any, dense: Any, good: list[dict[str, Any]], images: list[InputImage],
                  boxes: Optional[dict[str, tuple[np.ndarray, list[str]]]], text: Any) -> Optional[list[np.ndarray]]:
    """Per image of the batch, ``[N_i, K]`` logits of its boxes on the already computed
    ``[B, C, h, w]`` dense map (None without a boxes file)."""
    if boxes is None:
        return None
    scaled = [item["plan"].to_input(boxes.get(images[item["index"]].name, (np.zeros((0, 4)), []))[0])
              for item in good]
    return box_logits(model, dense, scaled, text)


def _finish(dense: torch.Tensor, text: torch.Tensor, item: dict[str, Any], image: InputImage, vocab: Vocabulary,
            out_dir: Path, config: RunConfig, temperature: float, patch: int, box_features: Optional[torch.Tensor],
            boxes: Optional[dict[str, tuple[np.ndarray, list[str]]]], shared_seconds: float) -> dict[str, Any]:
    """Maps, segments and files of one decoded image; a summary row (``error`` if writing failed)."""
    started = time.perf_counter()
    plan = item["plan"]
    given = None
    if boxes is not None:
        given = boxes.get(image.name, (np.zeros((0, 4)), []))[0]
    try:
        labels, scores, segments, min_area = predict(
            dense, text, plan, vocab, logit_scale=temperature, patch_size=patch, top_k=config.top_k,
            min_area=config.min_area, box_logits=box_features, boxes=given,
        )
        result = SegmentResult(
            labels=labels, scores=scores, segments=segments, vocab=vocab, width=plan.original_width,
            height=plan.original_height, model=config.model_name, input_size=config.size,
            mode="boxes" if given is not None else "regions", min_area=min_area, file=str(image.path),
            image=item["display"],
        )
        write_outputs(result, out_dir, image.name, config.overlay_max_side)
    except (DenseVLMError, OSError, MemoryError) as e:
        reason = str(DenseVLMError(f"{image.path}: {e}"))
        log.warning("skipped %s", reason)
        return _error_row(image, reason, shared_seconds + time.perf_counter() - started)
    seconds = shared_seconds + time.perf_counter() - started
    reason = ""
    if not segments and given is None and min_area > 0:
        reason = f"every region is under the minimum area of {min_area} pixels (--min-area 0 keeps them)"
        log.warning("%s: no segments: %s", image.path, reason)
    return {
        "file": str(image.path), "name": image.name, "status": "ok", "reason": reason, "segments": len(segments),
        "top_classes": _top_classes(result.class_areas()), "seconds": round(seconds, 3),
    }
