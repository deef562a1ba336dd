"""A segment pipeline that keeps the model busy: decoding, preprocessing, post-processing and
writing run in parallel with the model's batches.

    decode + letterbox (thread pool, ahead)  ->  encode_dense, a batch at a time (this thread)
        ->  maps, regions, RLE, files (thread pool, or process pool)  ->  results in input order

The model runs in the calling thread, one ``[B, 3, S, S]`` batch at a time, while the decode
pool prepares the next batches and the finish pool post-processes the previous ones. Decoding
runs in threads: Pillow's decoding and resizing and numpy on whole arrays release the GIL, and the
model inputs never need pickling (nor a model copy per worker). The vocabulary is embedded while
the first images decode. The model's output is converted to numpy once per batch
(:func:`densevlm.dense.as_array`); the finish step sees ``[C, h, w]`` float32 arrays.

The finish step runs in threads by default, which suits results kept in memory
(:func:`densevlm.segment` on a list). With ``processes=True`` it runs in worker processes
instead: a finish step that mostly runs Python (regions, segments, overlays, JSON: about 9 ms
of a 64 px scene, with the GIL held) then no longer takes turns with decoding and the model's
thread. Each task sends the :class:`Prepared` (without its model input), the dense map and the
class embeddings to a worker (about 50 KiB for a 64 px scene with tiny-student, 0.3 ms to
pickle), and the result back. The workers are forked where the platform can (Linux: they start
in milliseconds, before this process starts its threads, and inherit ``finish``), else spawned
(``finish`` is then pickled once per worker). Finishing is not cheaper in a process, only
parallel: it pays where the machine has cores for it and the model leaves them free. The workers
ignore Ctrl-C (the caller stops them: queued tasks are cancelled and the running ones end), leave
when the calling process dies, and the log records ``finish`` makes in a worker are re-emitted
here, with its result, in input order.

At most about ``4 x batch_size`` images are in flight (decoded, waiting, or being finished),
whatever the number of inputs.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import threading
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TypeVar

import numpy as np

from densevlm.dense import as_array, no_grad, stack_inputs
from densevlm.errors import DenseVLMError
from densevlm.imaging import Letterbox
from densevlm.regions import similarity
from densevlm.vocab import Vocabulary

__all__ = ["Prepared", "run_pipeline", "box_logits", "default_workers"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Prepared:
    """One decoded input: its position, the model input and letterbox, and what the finish step
    needs besides (``extra``: e.g. the display image); or the one-line ``error`` that stopped it.

    ``boxes`` (``[N, 4]`` XYXY original pixels, set by ``prepare``) are classified on the dense
    map in the model's thread; their ``[N, K]`` logits arrive in ``box_logits``.
    """

    index: int
    input: Any = None
    plan: Optional[Letterbox] = None
    extra: Any = None
    error: Optional[str] = None
    boxes: Optional[np.ndarray] = None
    box_logits: Optional[np.ndarray] = None


def default_workers() -> int:
    """Threads (or processes) per pool when none are given: the CPU count, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


def run_pipeline(
    model: Any,
    items: Sequence[T],
    vocab: Vocabulary,
    prepare: Callable[[int, T], Prepared],
    finish: Callable[[Prepared, Optional[np.ndarray], np.ndarray], R],
    *,
    batch_size: int = 8,
    workers: Optional[int] = None,
    processes: bool = False,
    templates: Optional[str] = None,
    text: Any = None,
) -> Iterator[R]:
    """Yield ``finish(prepared, dense, text)`` for every item, in input order.

    Args:
        model: a :class:`~densevlm.dense.DenseRuntime`.
        items: what ``prepare`` reads (paths, PIL images ...).
        vocab: the classes.
        prepare: ``(index, item) -> Prepared`` in a decode thread; it returns a ``Prepared``
            with ``error`` set instead of raising for an input that cannot be used.
        finish: ``(prepared, [C, h, w] float32 dense map or None for an error, [K, C] float32
            class embeddings) -> result`` in a finish thread or process; exceptions propagate to
            the caller. ``prepared.input`` is None by then (dropped once encoded).
        batch_size: images per forward pass.
        workers: threads of the decode pool and threads (or processes) of the finish pool
            (default :func:`default_workers`; 0 runs everything in this thread, in order).
        processes: finish in ``workers`` processes (see the module docstring): ``finish`` must
            be picklable where processes are spawned (a module-level function or an instance
            of a module-level class), and so must the ``Prepared`` and the results.
        templates: prompt template set for :meth:`embed_vocabulary` (None: the model's own).
        text: class embeddings already made (skips :meth:`embed_vocabulary`).

    Raises:
        DenseVLMError: a finish worker process died (killed, e.g. out of memory).
    """
    workers = default_workers() if workers is None else int(workers)
    if workers == 0:
        yield from _serial(model, items, vocab, prepare, finish, batch_size, templates, text)
        return
    # the finish pool first: worker processes fork before this call starts any thread
    finishers = _process_pool(workers, finish) if processes else ThreadPoolExecutor(
        workers, thread_name_prefix="densevlm-finish")
    decoders = ThreadPoolExecutor(workers, thread_name_prefix="densevlm-decode")
    ahead: deque[Future] = deque()
    pending: deque[Future] = deque()
    try:
        todo = iter(enumerate(items))

        def refill() -> None:
            while len(ahead) < 2 * batch_size:
                nxt = next(todo, None)
                if nxt is None:
                    return
                ahead.append(decoders.submit(prepare, *nxt))

        refill()  # the first images decode while the vocabulary is embedded
        with no_grad():
            table = _embed(model, vocab, templates) if text is None else text
            text_array = as_array(table)
            while ahead:
                batch = []
                while ahead and len(batch) < batch_size:
                    batch.append(ahead.popleft().result())
                    refill()
                for prepared, dense in _encode(model, batch, table):
                    if processes:
                        pending.append(finishers.submit(_finish_in_worker, prepared, dense, text_array))
                    else:
                        pending.append(finishers.submit(finish, prepared, dense, text_array))
                while len(pending) > 2 * batch_size or (pending and pending[0].done()):
                    yield _outcome(pending.popleft(), processes)
            while pending:
                yield _outcome(pending.popleft(), processes)
    except BrokenProcessPool:
        raise DenseVLMError("a post-processing worker process died (killed by the system, e.g. out of memory?); "
                            "with no workers (--workers 0) everything runs in one process") from None
    finally:
        # on an error, Ctrl-C or a consumer that stops early: nothing queued starts, what runs ends
        decoders.shutdown(wait=True, cancel_futures=True)
        finishers.shutdown(wait=True, cancel_futures=True)


def _outcome(future: Future, processes: bool) -> Any:
    """A finish task's result; from a worker process, after re-emitting its log records here."""
    if not processes:
        return future.result()
    result, records = future.result()
    for record in records:
        logging.getLogger(record.name).handle(record)
    return result


def _process_pool(workers: int, finish: Callable[..., Any]) -> ProcessPoolExecutor:
    """``workers`` started worker processes holding ``finish`` (forked where possible, else spawned)."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    level = logging.getLogger("densevlm").getEffectiveLevel()
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                               initializer=_start_worker, initargs=(finish, level))
    # the workers start now (with fork, all of them at the first task); the objects made so far are
    # frozen meanwhile, so that a forked worker's garbage collections never scan them, and so never
    # copy the memory pages it shares with this process
    gc.freeze()
    try:
        pool.submit(int)
    finally:
        gc.unfreeze()
    return pool


class _Capture(logging.Handler):
    """Keeps a worker's log records, made picklable, for :func:`_finish_in_worker` to send back."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args, record.exc_info = record.getMessage(), None, None
        self.records.append(record)


_worker_finish: Optional[Callable[..., Any]] = None
_worker_log = _Capture()


def _start_worker(finish: Callable[..., Any], level: int) -> None:
    """Initializer of a finish worker process: holds ``finish``, leaves Ctrl-C to the caller,
    captures ``densevlm`` log records at the caller's level, and exits when the caller does."""
    global _worker_finish
    _worker_finish = finish
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logger = logging.getLogger("densevlm")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.addHandler(_worker_log)
    logger.setLevel(level)
    logger.propagate = False
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: Any) -> None:
    parent.join()  # returns when the calling process has ended, however it ended
    os._exit(1)


def _finish_in_worker(prepared: Prepared, dense: Optional[np.ndarray], text: np.ndarray) -> tuple[Any, list]:
    """``(finish(prepared, dense, text), the log records it made)`` in a worker process."""
    _worker_log.records = []
    return _worker_finish(prepared, dense, text), _worker_log.records


def _embed(model: Any, vocab: Vocabulary, templates: Optional[str]) -> Any:
    return model.embed_vocabulary(vocab) if templates is None else model.embed_vocabulary(vocab, templates=templates)


def _encode(model: Any, batch: list[Prepared], text: Any) -> Iterable[tuple[Prepared, Optional[np.ndarray]]]:
    """``(prepared, [C, h, w] dense map or None)`` for a batch, the model run once on the good
    ones (and their boxes classified on its output); their model inputs are dropped."""
    good = [p for p in batch if p.error is None]
    dense = None
    if good:
        raw = model.encode_dense(stack_inputs([p.input for p in good], like=text))
        if any(p.boxes is not None for p in good):
            empty = np.zeros((0, 4))
            scaled = [p.plan.to_input(p.boxes if p.boxes is not None else empty) for p in good]
            for p, logits in zip(good, box_logits(model, raw, scaled, text)):
                p.box_logits = logits
        dense = as_array(raw)
        for p in good:
            p.input = None  # not needed by the finish step, nor to be sent to a worker process
    row = {id(p): j for j, p in enumerate(good)}
    for p in batch:
        yield p, (dense[row[id(p)]] if p.error is None else None)


def box_logits(model: Any, dense: Any, boxes: Sequence[np.ndarray], text: Any) -> list[np.ndarray]:
    """Per image, ``[N_i, K]`` logits (``logit_scale`` x cosine) of its boxes on the computed dense map.

    The exported region graph classifies them where the runtime has one (``classify_boxes``);
    otherwise the RoI features are pooled with :func:`densevlm.regions.pooling.roi_pool`, which
    needs PyTorch.

    Args:
        dense: ``[B, C, h, w]`` from ``model.encode_dense``.
        boxes: B arrays ``[N_i, 4]``, XYXY in input pixels.
        text: ``[K, C]`` class embeddings from ``model.embed_vocabulary``.
    """
    counts = np.cumsum([len(b) for b in boxes])[:-1]
    if getattr(model, "has_region_classifier", False):
        logits = as_array(model.classify_boxes(dense, [np.asarray(b, np.float32) for b in boxes]))
        return np.split(logits, counts)
    import torch

    from densevlm.regions.pooling import roi_pool

    dense_t = torch.as_tensor(dense)
    text_t = torch.as_tensor(text, device=dense_t.device)
    scaled = [torch.as_tensor(np.asarray(b), dtype=torch.float32, device=dense_t.device) for b in boxes]
    feats = roi_pool(dense_t.float(), scaled, int(model.patch_size))
    return np.split(as_array(similarity.logits(feats, text_t.float(), float(model.logit_scale))), counts)


def _serial(model: Any, items: Sequence[T], vocab: Vocabulary, prepare: Callable[[int, T], Prepared],
            finish: Callable[[Prepared, Optional[np.ndarray], np.ndarray], R], batch_size: int,
            templates: Optional[str], text: Any) -> Iterator[R]:
    with no_grad():
        table = _embed(model, vocab, templates) if text is None else text
        text_array = as_array(table)
        for start in range(0, len(items), batch_size):
            batch = [prepare(start + j, item) for j, item in enumerate(items[start:start + batch_size])]
            for prepared, dense in _encode(model, batch, table):
                yield finish(prepared, dense, text_array)
