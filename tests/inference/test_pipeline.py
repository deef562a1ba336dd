"""The threaded pipeline: a list through segment() equals image-by-image calls, in order, and
errors of a file run come back as results without stopping the run."""

from __future__ import annotations

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
