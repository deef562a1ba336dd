"""The pipeline: a list through segment() equals image-by-image calls, in order; errors of a file
run come back as results without stopping the run; a finish step in worker processes gives what
it gives in threads, brings its log lines back, and leaves no process behind."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal

import numpy as np
import pytest
from PIL import Image

import densevlm
from densevlm.data.synth import default_vocabulary, generate_scene
from densevlm.errors import DenseVLMError
from densevlm.inference.pipeline import Prepared, run_pipeline


@pytest.fixture(scope="module")
def model():
    return densevlm.load_model("tiny-student")


def _scenes(n: int) -> list[Image.Image]:
    images = [Image.fromarray(generate_scene(seed=9, index=i, size=64).image) for i in range(n)]
    if n > 3:
        images[3] = images[3].resize((80, 48))  # another shape in the same batch
    return images


@pytest.mark.parametrize("workers", [0, 2])
def test_list_equals_one_by_one(model, workers):
    images = _scenes(11)
    vocab = default_vocabulary()
    together = densevlm.segment(model, images, vocab, batch_size=4, workers=workers)
    assert isinstance(together, list) and len(together) == len(images)
    for image, result in zip(images, together):
        alone = densevlm.segment(model, image, vocab)
        assert result.labels.shape == (image.height, image.width)
        np.testing.assert_array_equal(result.labels, alone.labels)
        np.testing.assert_allclose(result.scores, alone.scores, atol=1e-5)
        assert [s.rle for s in result.segments] == [s.rle for s in alone.segments]


def test_list_with_boxes_is_refused(model):
    with pytest.raises(DenseVLMError, match="one image"):
        densevlm.segment(model, _scenes(2), default_vocabulary(), boxes=[[0, 0, 8, 8]])


def test_errors_travel_as_results_and_order_is_kept(model):
    images = _scenes(7)

    def prepare(index, item):
        if index in (2, 5):
            return Prepared(index, error=f"item {index} is broken")
        x, plan = model.prepare(item, 64, square=True)
        return Prepared(index, x, plan)

    def finish(prepared, dense, text):
        assert text.shape == (len(default_vocabulary()), dense.shape[0] if dense is not None else text.shape[1])
        return prepared.index, prepared.error, None if dense is None else dense.shape

    out = list(run_pipeline(model, images, default_vocabulary(), prepare, finish, batch_size=3, workers=2))
    assert [i for i, _, _ in out] == list(range(7))
    assert [e for _, e, _ in out if e] == ["item 2 is broken", "item 5 is broken"]
    assert all(shape == (out[0][2]) for _, e, shape in out if e is None)


log = logging.getLogger("densevlm.tests.pipeline")


def _prepare_for(model):
    def prepare(index, item):
        if index == 3:
            return Prepared(index, error=f"item {index} is broken")
        x, plan = model.prepare(item, 64, square=True)
        return Prepared(index, x, plan)

    return prepare


def _finish_here_or_there(prepared, dense, text):
    """A finish step for worker processes: says where it ran and logs about odd items."""
    if prepared.index % 4 == 1:
        log.warning("item %d: a remark", prepared.index)
    if prepared.error is not None:
        return prepared.index, os.getpid(), prepared.error, None
    assert prepared.input is None  # dropped once encoded, never sent to a worker
    return prepared.index, os.getpid(), None, float(np.abs(dense).sum() + np.abs(text).sum())


def _finish_failing(prepared, dense, text):
    if prepared.index == 4:
        raise DenseVLMError("item 4 cannot be written")
    return prepared.index


def _finish_dying(prepared, dense, text):
    if prepared.index == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return prepared.index


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_processes_finish_like_threads_in_order_and_bring_their_log_lines(model, method, monkeypatch, caplog):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} here")
    images, vocab = _scenes(9), default_vocabulary()
    threads = list(run_pipeline(model, images, vocab, _prepare_for(model), _finish_here_or_there, batch_size=2,
                                workers=2))
    caplog.clear()
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: [method])
    processes = list(run_pipeline(model, images, vocab, _prepare_for(model), _finish_here_or_there, batch_size=2,
                                  workers=2, processes=True))
    assert [i for i, _, _, _ in processes] == list(range(9))
    assert [(i, e, v) for i, _, e, v in processes] == [(i, e, v) for i, _, e, v in threads]
    assert os.getpid() not in {pid for _, pid, _, _ in processes}
    assert [r.getMessage() for r in caplog.records if r.name == log.name] == [
        "item 1: a remark", "item 5: a remark"]
    assert multiprocessing.active_children() == []


def test_an_error_in_a_worker_reaches_the_caller_and_the_workers_stop(model):
    with pytest.raises(DenseVLMError, match="item 4 cannot be written"):
        for _ in run_pipeline(model, _scenes(12), default_vocabulary(), _prepare_for(model), _finish_failing,
                              batch_size=2, workers=2, processes=True):
            pass
    assert multiprocessing.active_children() == []


def test_a_consumer_that_stops_early_stops_the_workers(model):
    results = run_pipeline(model, _scenes(12), default_vocabulary(), _prepare_for(model), _finish_failing,
                           batch_size=2, workers=2, processes=True)
    assert next(results) == 0
    results.close()
    assert multiprocessing.active_children() == []


def test_a_killed_worker_is_one_line(model):
    with pytest.raises(DenseVLMError, match="worker process died"):
        list(run_pipeline(model, _scenes(6), default_vocabulary(), _prepare_for(model), _finish_dying,
                          batch_size=2, workers=2, processes=True))
    assert multiprocessing.active_children() == []
