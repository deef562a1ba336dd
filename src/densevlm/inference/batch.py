"""Segmenting many files: what ``densevlm segment`` runs.

The run goes through :func:`densevlm.inference.pipeline.run_pipeline`: ``workers`` threads
decode and letterbox the images ahead of the model (every image to a ``size x size`` square, so
any aspect ratios batch together, plus a copy at most ``overlay_max_side`` for the overlay, so
full-resolution pixels are dropped early), the model runs a batch at a time, and ``workers``
processes make each image's maps and segments and write its files while the next batch runs
(processes, not threads: that step is mostly Python, about 9 ms of a 64 px scene, and in threads
it would take turns with decoding and the model for the GIL). Nothing here imports PyTorch: an
export runs on a machine without it. The run is resumable: an image whose three outputs exist
(and whose JSON reads back) is skipped unless ``overwrite``, and keeps its row of the earlier
run's summary. A file that cannot be read or written is skipped with one warning line and an
``error`` row in the summary; the run goes on.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from densevlm.dense import DenseRuntime
from densevlm.errors import DenseVLMError
from densevlm.imaging import open_image
from densevlm.inference.io import SUMMARY_FIELDS, InputImage, finished_json, write_outputs, write_summary
from densevlm.inference.overlay import display_image
from densevlm.inference.pipeline import Prepared, run_pipeline
from densevlm.inference.result import SegmentResult
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
        workers: threads that decode (and as many processes that post-process and write)
            around the model (0: everything in order in one thread).
        processes: post-process and write in ``workers`` processes (False: in threads; see
            :mod:`densevlm.inference.pipeline` for when each pays).
        overwrite: redo images whose outputs exist.
        overlay_max_side: longest side of the drawn image in the overlay.
        progress: show a progress bar (and route log lines through it).
        model_name: written to each JSON.
        templates: prompt template set of the class embeddings (None: the model's own).
    """

    size: int
    top_k: int = 5
    min_area: Optional[int] = None
    batch_size: int = 8
    workers: int = 2
    processes: bool = True
    overwrite: bool = False
    overlay_max_side: int = 2048
    progress: bool = False
    model_name: str = ""
    templates: Optional[str] = None


@dataclass
class RunSummary:
    """One row per input image (in input order), the positions of the rows of images skipped because
    their outputs existed, and the run's wall time in seconds."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: set[int] = field(default_factory=set)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        """Images of this run with ``status`` (``ok``, ``error``), or ``skipped`` ones."""
        if status == "skipped":
            return len(self.skipped)
        return sum(1 for i, r in enumerate(self.rows) if i not in self.skipped and r["status"] == status)


def _top_classes(shares: Sequence[tuple[str, float]]) -> str:
    return "; ".join(f"{name}:{100.0 * share:.0f}%" for name, share in shares[:_TOP_CLASSES])


def _skipped_row(image: InputImage, doc: dict[str, Any], earlier: Optional[dict[str, str]]) -> dict[str, Any]:
    """The row of an image whose outputs exist: the earlier run's row for its name, else one made
    from its JSON with status ``skipped``."""
    if earlier is not None:
        return earlier
    shares = [(c.get("category", "?"), float(c.get("share", 0.0))) for c in doc.get("class_areas", [])]
    return {
        "file": str(image.path), "name": image.name, "status": "skipped", "reason": "outputs exist (--overwrite redoes them)",
        "segments": len(doc.get("segments", [])), "top_classes": _top_classes(shares), "seconds": 0.0,
    }


def _run_settings(config: RunConfig, vocab: Vocabulary, mode: str) -> dict[str, Any]:
    """What an image's JSON must record for this run to skip it (:func:`_check_same_run`): model,
    input size, mode, vocabulary and, when given, the speck threshold."""
    settings = {"model": config.model_name, "input size": config.size, "mode": mode, "vocabulary": list(vocab.names)}
    if config.min_area is not None:
        settings["min area"] = config.min_area
    return settings


_RECORDED = {"model": "model", "input size": "input_size", "mode": "mode", "min area": "min_area"}


def _check_same_run(doc: dict[str, Any], name: str, out_dir: Path, settings: dict[str, Any]) -> None:
    """Refuse (one line) to skip an image whose outputs were made by a run with other
    ``settings`` (:func:`_run_settings`). Skipping it would leave that run's results among this
    one's; redoing it would write over them."""
    for key, value in settings.items():
        theirs = (doc.get("vocabulary") or {}).get("names") if key == "vocabulary" else doc.get(_RECORDED[key])
        if theirs != value:
            raise DenseVLMError(
                f"{out_dir}: holds another run's outputs ({name}.json: {key} {_shown(theirs)}, not {_shown(value)}); "
                "use another --out, or --overwrite to redo every image")


def _check_same_image(doc: dict[str, Any], image: InputImage, out_dir: Path) -> None:
    """Refuse (one line) to skip an image whose NAME's outputs came from another file that still exists
    (``cam1/z.png`` then ``cam2/z.png`` into one --out): they are not this image's results."""
    recorded = doc.get("file")
    if isinstance(recorded, str) and Path(recorded).is_file() and Path(recorded).resolve() != image.path.resolve():
        raise DenseVLMError(f"{out_dir}: {image.name}.json holds the outputs of {recorded}, not of {image.path}; "
                            "use another --out, or --overwrite to redo every image")


def _shown(value: Any) -> Any:
    return f"{len(value)} classes" if isinstance(value, list) else value


def _earlier_rows(path: Path) -> dict[str, dict[str, str]]:
    """``{name: row}`` of the ``ok`` and ``skipped`` rows of an earlier run's summary at ``path`` (empty
    when there is none or it does not read as one)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    complete = [r for r in rows if all(isinstance(r.get(k), str) for k in SUMMARY_FIELDS)]
    return {r["name"]: {k: r[k] for k in SUMMARY_FIELDS} for r in complete if r["status"] in ("ok", "skipped")}


def _error_row(image: InputImage, reason: str, seconds: float = 0.0) -> dict[str, Any]:
    return {"file": str(image.path), "name": image.name, "status": "error", "reason": reason,
            "segments": 0, "top_classes": "", "seconds": round(seconds, 3)}


def segment_files(
    model: DenseRuntime,
    images: Sequence[InputImage],
    vocab: Vocabulary,
    out_dir: str | Path,
    config: RunConfig,
    boxes: Optional[dict[str, tuple[np.ndarray, list[str]]]] = None,
) -> RunSummary:
    """Segment ``images`` into ``out_dir`` and write ``out_dir/summary.csv`` (this run's images after the
    rows of an earlier run's other images whose outputs are still in ``out_dir``).

    Args:
        model: a :class:`~densevlm.dense.DenseRuntime`.
        images: from :func:`~densevlm.inference.io.collect_inputs`.
        vocab: the classes.
        config: run settings.
        boxes: ``{image name: ([N, 4] XYXY original pixels, where)}``; when given, every image is
            segmented in box mode (an image without boxes gets no segments).

    Returns:
        The summary (also written as CSV, even when the run is interrupted).

    Raises:
        DenseVLMError: ``out_dir`` cannot be made, or holds outputs of a run with another model,
            input size, vocabulary, mode or speck threshold (before any image is segmented).
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DenseVLMError(f"{out_dir}: cannot create the output folder ({e.strerror or type(e).__name__})") from None
    started = time.perf_counter()
    rows: dict[int, dict[str, Any]] = {}
    todo: list[int] = []
    previous = _earlier_rows(out_dir / "summary.csv")
    names = {image.name for image in images}
    # rows of an earlier run's other images whose outputs are still here stay in summary.csv
    others = [row for name, row in previous.items() if name not in names and (out_dir / f"{name}.json").is_file()]
    earlier = {} if config.overwrite else previous
    settings = _run_settings(config, vocab, "regions" if boxes is None else "boxes")
    for i, image in enumerate(images):
        doc = None if config.overwrite else finished_json(out_dir, image.name)
        if doc is None:
            todo.append(i)
        else:
            _check_same_run(doc, image.name, out_dir, settings)
            _check_same_image(doc, image, out_dir)
            rows[i] = _skipped_row(image, doc, earlier.get(image.name))
    skipped = set(rows)
    if rows:
        log.info("%d of %d images already have outputs in %s; skipping them (--overwrite redoes them)",
                 len(rows), len(images), out_dir)
    summary = RunSummary()
    try:
        if todo:
            _run(model, [images[i] for i in todo], todo, vocab, out_dir, config, boxes, rows)
    finally:
        summary.rows = [rows[i] for i in sorted(rows)]
        summary.skipped = {position for position, i in enumerate(sorted(rows)) if i in skipped}
        summary.seconds = time.perf_counter() - started
        write_summary(out_dir / "summary.csv", others + summary.rows)
    return summary


def _prepare(image: InputImage, model: Any, config: RunConfig,
             boxes: Optional[dict[str, tuple[np.ndarray, list[str]]]], index: int) -> Prepared:
    """Decode one file (in a decode thread): model input, letterbox, (display copy, start time), or an error."""
    started = time.perf_counter()
    path = image.path
    try:
        pil = open_image(path)
        try:
            x, plan = model.prepare(pil, config.size, square=True)
        except DenseVLMError as e:
            raise DenseVLMError(f"{path}: {e}") from None
        # a large photo is shrunk now (its full-resolution pixels dropped early); a small one is
        # kept as it is, since the overlay tints it at its own size before enlarging it
        display = pil if max(pil.size) <= config.overlay_max_side else display_image(pil, config.overlay_max_side)
    except DenseVLMError as e:
        return Prepared(index, error=str(e))
    except (OSError, ValueError, MemoryError) as e:
        return Prepared(index, error=str(DenseVLMError(f"{path}: cannot decode ({type(e).__name__}: {e})")))
    given = None if boxes is None else boxes.get(image.name, (np.zeros((0, 4)), []))[0]
    return Prepared(index, x, plan, extra=(display, started), boxes=given)


def _run(model: Any, images: list[InputImage], indices: list[int], vocab: Vocabulary, out_dir: Path, config: RunConfig,
         boxes: Optional[dict[str, tuple[np.ndarray, list[str]]]], rows: dict[int, dict[str, Any]]) -> None:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    # the regions' labelling (scipy.ndimage, 0.3 s to import) is imported once, here, before the
    # finish workers fork, rather than once in each of them
    import scipy.ndimage  # noqa: F401

    finish = _Finish(images, vocab, out_dir, config, float(model.logit_scale), int(model.patch_size))
    # with a bar on screen, log lines go through tqdm so they do not break it
    redirect = contextlib.nullcontext()
    if config.progress:
        redirect = logging_redirect_tqdm(loggers=[logging.getLogger("densevlm")])
    with redirect:
        bar = tqdm(total=len(images), desc="segment", unit="img", disable=None if config.progress else True)
        for i, row in run_pipeline(model, images, vocab, lambda i, image: _prepare(image, model, config, boxes, i),
                                   finish, batch_size=config.batch_size, workers=config.workers, processes=config.processes,
                                   templates=config.templates):
            rows[indices[i]] = row
            bar.update(1)
        bar.close()


@dataclass
class _Finish:
    """The finish step of a run: ``(prepared, dense, text) -> (index, summary row)``, with a warning
    line for an image that failed. Picklable: it is sent to each finish worker process once."""

    images: list[InputImage]
    vocab: Vocabulary
    out_dir: Path
    config: RunConfig
    logit_scale: float
    patch: int

    def __call__(self, prepared: Prepared, dense: Optional[np.ndarray], text: np.ndarray) -> tuple[int, dict[str, Any]]:
        image = self.images[prepared.index]
        if prepared.error is not None:
            log.warning("skipped %s", prepared.error)
            return prepared.index, _error_row(image, prepared.error)
        return prepared.index, _finish(dense, text, prepared, image, self.vocab, self.out_dir, self.config,
                                       self.logit_scale, self.patch)


def _finish(dense: np.ndarray, text: np.ndarray, prepared: Prepared, image: InputImage, vocab: Vocabulary,
            out_dir: Path, config: RunConfig, logit_scale: float, patch: int) -> dict[str, Any]:
    """Maps, segments and files of one decoded image; a summary row (``error`` if writing failed) whose
    ``seconds`` is the image's latency, from the start of its decoding to its last file."""
    display, started = prepared.extra
    plan = prepared.plan
    given = prepared.boxes
    try:
        labels, scores, segments, min_area = predict(
            dense, text, plan, vocab, logit_scale=logit_scale, patch_size=patch, top_k=config.top_k,
            min_area=config.min_area, box_logits=prepared.box_logits, boxes=given, lazy_scores=True,
        )
        result = SegmentResult(
            labels=labels, score_map=scores, segments=segments, vocab=vocab, width=plan.original_width,
            height=plan.original_height, model=config.model_name, input_size=config.size,
            mode="boxes" if given is not None else "regions", min_area=min_area, file=str(image.path),
            image=display,
        )
        write_outputs(result, out_dir, image.name, config.overlay_max_side)
    except (DenseVLMError, OSError, MemoryError) as e:
        reason = str(DenseVLMError(f"{image.path}: {e}"))
        log.warning("skipped %s", reason)
        return _error_row(image, reason, time.perf_counter() - started)
    reason = ""
    if not segments and given is None and min_area > 0:
        reason = f"every region is under the minimum area of {min_area} pixels (--min-area 0 keeps them)"
        log.warning("%s: no segments: %s", image.path, reason)
    return {
        "file": str(image.path), "name": image.name, "status": "ok", "reason": reason, "segments": len(segments),
        "top_classes": _top_classes(result.class_areas()), "seconds": round(time.perf_counter() - started, 3),
    }
