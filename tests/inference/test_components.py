"""Regions and segments: ``predict`` gives, bit for bit, what the straightforward computation gives
(a segment's mean score to float32 round-off when the photo is larger than the model input).

The reference below is the region code as it was before it was vectorised (a full-size mask per
region, a ``scipy.ndimage.label`` per class crop, an RLE per mask, maps made with the one-line
bilinear formula and numpy's own argmax): labels, scores, segment order, ids, classes, areas,
boxes, RLE strings, anchors, mean scores and top-k probabilities must all be equal, not close.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

import densevlm
from densevlm.data.synth import default_vocabulary, generate_scene
from densevlm.dense import as_array
from densevlm.imaging import Letterbox
from densevlm.inference.segment import default_min_area, predict
from densevlm.regions import similarity
from densevlm.regions.pooling import grid_token_weights, weighted_pool
from densevlm.regions.rle import encode_rle
from densevlm.vocab import Vocabulary
from tests.conftest import perturb_
from tests.inference.helpers import PaletteStub, paint


def _nearest(n_out: int, n_in: int) -> np.ndarray:
    return np.minimum(((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def _taps(n_out: int, n_in: int):
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    return i0, np.minimum(i0 + 1, n_in - 1), (src - i0).astype(np.float32)


def _bilinear(x: np.ndarray, height: int, width: int, rows: int, cols: int) -> np.ndarray:
    r0, r1, rw = (t[:rows] for t in _taps(height, x.shape[-2]))
    c0, c1, cw = (t[:cols] for t in _taps(width, x.shape[-1]))
    tall = x[..., r0, :] * (1.0 - rw[:, None]) + x[..., r1, :] * rw[:, None]
    return tall[..., c0] * (1.0 - cw) + tall[..., c1] * cw


def _reference_maps(dense, text, logit_scale, plan: Letterbox, chunk: int):
    logits = np.float32(logit_scale) * similarity.cosine(dense, text, dim=0)
    best = np.full((plan.height, plan.width), -np.inf, dtype=np.float32)
    arg = np.zeros((plan.height, plan.width), dtype=np.int64)
    lse = np.full((plan.height, plan.width), -np.inf, dtype=np.float32)
    for start in range(0, logits.shape[0], chunk):
        up = _bilinear(logits[start: start + chunk], plan.input_height, plan.input_width, plan.height, plan.width)
        index = up.argmax(axis=0)
        value = np.take_along_axis(up, index[None], axis=0)[0]
        better = value > best
        arg = np.where(better, index + start, arg)
        best = np.where(better, value, best)
        # the denominator as pixel_predictions adds it: classes-last, times a vector of ones
        lse = np.logaddexp(lse, value + np.log(np.moveaxis(np.exp(up - value), 0, -1) @ np.ones(len(up), np.float32)))
    return arg, np.exp(best - lse)


def _reference_predict(dense, text, plan: Letterbox, vocab: Vocabulary, logit_scale: float, patch: int, top_k: int,
                       min_area: int | None, chunk: int = 1 << 30):
    """``(labels, scores, [(json, anchor)])`` the slow way (see the module docstring)."""
    min_area = default_min_area(plan, patch) if min_area is None else min_area
    arg, prob = _reference_maps(dense, text, logit_scale, plan, chunk)
    content = arg.astype(np.uint8 if len(vocab) < 256 else np.uint16)
    h0, w0 = plan.original_height, plan.original_width
    labels = content[_nearest(h0, plan.height)][:, _nearest(w0, plan.width)] if content.shape != (h0, w0) else content
    scores = _bilinear(prob, h0, w0, h0, w0) if prob.shape != (h0, w0) else prob
    # the base map: the content map when the photo is larger than it, else the original map
    if plan.height <= h0 and plan.width <= w0:
        base, rows, cols = content, _nearest(h0, plan.height), _nearest(w0, plan.width)
        token_rows, token_cols = np.arange(plan.height) // patch, np.arange(plan.width) // patch
    else:
        base, rows, cols = labels, np.arange(h0), np.arange(w0)
        token_rows, token_cols = _nearest(h0, plan.height) // patch, _nearest(w0, plan.width) // patch
    row_sizes, col_sizes = np.bincount(rows, minlength=base.shape[0]), np.bincount(cols, minlength=base.shape[1])
    row_starts, col_starts = np.cumsum(row_sizes) - row_sizes, np.cumsum(col_sizes) - col_sizes
    blocks = np.outer(row_sizes, col_sizes).astype(np.float64)
    found = []
    for k, class_box in enumerate(ndimage.find_objects(base.astype(np.int32) + 1)):
        if class_box is None:
            continue
        components, n = ndimage.label(base[class_box] == k, structure=np.ones((3, 3), dtype=bool))
        areas = np.rint(np.bincount(components.ravel(), weights=blocks[class_box].ravel(), minlength=n + 1))
        for i, box in enumerate(ndimage.find_objects(components), start=1):
            if box is not None and areas[i] >= max(1, min_area):
                where = tuple(slice(c.start + b.start, c.start + b.stop) for c, b in zip(class_box, box))
                found.append((k, where, components[box] == i, int(areas[i])))
    out = []
    if found:
        masks = np.zeros((len(found),) + base.shape, dtype=np.float32)
        for mask, (_, where, crop, _) in zip(masks, found):
            mask[where] = crop * blocks[where]
        feats = weighted_pool(dense, grid_token_weights(masks, token_rows, token_cols, dense.shape[-2:]))
        probs = similarity.probabilities(similarity.logits(feats.astype(np.float64), text.astype(np.float64),
                                                           logit_scale))
    for n, (k, where, crop, area) in enumerate(found):
        top = np.argsort(-probs[n], kind="stable")[:top_k]
        y0, y1 = int(row_starts[where[0].start]), int(row_starts[where[0].stop - 1] + row_sizes[where[0].stop - 1])
        x0, x1 = int(col_starts[where[1].start]), int(col_starts[where[1].stop - 1] + col_sizes[where[1].stop - 1])
        full = np.zeros((h0, w0), dtype=bool)
        full[y0:y1, x0:x1] = crop[rows[y0:y1] - where[0].start][:, cols[x0:x1] - where[1].start]
        ys, xs = np.nonzero(crop)
        weights = row_sizes[where[0]][ys].astype(np.float64) * col_sizes[where[1]][xs]
        cy, cx = float(ys @ weights) / weights.sum(), float(xs @ weights) / weights.sum()
        near = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
        row, col = where[0].start + int(ys[near]), where[1].start + int(xs[near])
        out.append({
            "category_index": k, "category": vocab.names[k], "isthing": bool(vocab.is_thing[k]),
            "score": float(scores[y0:y1, x0:x1][full[y0:y1, x0:x1]].mean(dtype=np.float64)),
            "topk": [(vocab.names[i], float(probs[n, i])) for i in top.tolist()],
            "bbox": (float(x0), float(y0), float(x1), float(y1)), "area": area, "rle": encode_rle(full),
            "anchor": (int(col_starts[col] + col_sizes[col] // 2), int(row_starts[row] + row_sizes[row] // 2)),
        })
    out.sort(key=lambda s: (-s["area"], s["bbox"][1], s["bbox"][0]))
    return labels, scores, out


def _check_same(dense, text, plan, vocab, logit_scale, patch, top_k=5, min_area=None):
    labels, scores, segments, _ = predict(dense, text, plan, vocab, logit_scale=logit_scale, patch_size=patch,
                                          top_k=top_k, min_area=min_area)
    ref_labels, ref_scores, ref = _reference_predict(dense, text, plan, vocab, logit_scale, patch, top_k, min_area)
    assert labels.dtype == ref_labels.dtype and scores.dtype == ref_scores.dtype == np.float32
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(scores, ref_scores)
    assert [s.id for s in segments] == list(range(1, len(ref) + 1))
    got = [{"category_index": s.category_index, "category": s.category, "isthing": s.isthing, "score": s.score,
            "topk": s.topk, "bbox": s.bbox, "area": s.area, "rle": s.rle, "anchor": s.anchor} for s in segments]
    if labels.shape[0] > plan.height or labels.shape[1] > plan.width:  # mean scores from block sums (float32 round-off)
        for g, r in zip(got, ref):
            assert g.pop("score") == pytest.approx(r.pop("score"), rel=1e-6)
    assert got == ref  # floats compared exactly
    return segments


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(0)
    model = densevlm.load_model("tiny-vit")
    perturb_(model.backbone.clip, seed=3)
    return model


# the input size, smaller and larger photos (one way, both ways), letterboxed, odd and thin shapes
SIZES = [(64, 64), (97, 61), (640, 480), (64, 48), (40, 30), (33, 100), (200, 25), (130, 129)]


@pytest.mark.parametrize("width, height", SIZES)
def test_segments_equal_the_per_region_computation_on_scenes(random_model, width, height):
    vocab = default_vocabulary()
    text = as_array(random_model.embed_vocabulary(vocab))
    total = 0
    for index in range(3):
        image = Image.fromarray(generate_scene(seed=7, index=index, size=64).image).resize((width, height),
                                                                                           Image.BICUBIC)
        x, plan = random_model.prepare(image, 64, square=True)
        with torch.no_grad():
            dense = as_array(random_model.encode_dense(x[None]))[0]
        for min_area in (None, 0, 3 * default_min_area(plan, 8)):
            total += len(_check_same(dense, text, plan, vocab, float(random_model.logit_scale), 8, top_k=3,
                                     min_area=min_area))
    assert total > 10


def test_chunked_maps_and_ties_equal_the_reference():
    rng = np.random.default_rng(0)
    vocab = Vocabulary.from_lists([f"part {i}" for i in range(7)], ["belt", "floor", "wall"])
    dense = rng.standard_normal((16, 7, 7)).astype(np.float32)
    dense[:, 3, 3] = 0.0  # every class ties here: the first one wins
    dense /= np.maximum(np.linalg.norm(dense, axis=0), 1e-12)
    text = rng.standard_normal((10, 16)).astype(np.float32)
    text[4] = text[2]  # two identical classes: the lower index wins everywhere
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    plan = densevlm.imaging.plan_letterbox(150, 90, 56, 8, square=True)
    from densevlm.inference.maps import pixel_predictions

    for chunk in (3, 10):
        arg, prob = pixel_predictions(dense, text, 25.0, plan, max_chunk_elements=chunk * 56 * 56)
        ref_arg, ref_prob = _reference_maps(dense, text, 25.0, plan, chunk)
        np.testing.assert_array_equal(arg, ref_arg)
        np.testing.assert_array_equal(prob, ref_prob)
    assert 4 not in set(arg.ravel().tolist())
    _check_same(dense, text, plan, vocab, 25.0, 8, min_area=0)


def test_painted_regions_touching_only_diagonally_are_one_region():
    model = PaletteStub(3)
    vocab = Vocabulary.from_lists(["red", "green"], ["blue"])
    # two red squares meeting at a corner (one 8-connected region), a green one elsewhere
    rgb, _ = paint((64, 64), [(0, (8, 8, 24, 24)), (0, (24, 24, 40, 40)), (1, (44, 8, 60, 24))], background=2)
    x, plan = model.prepare(Image.fromarray(rgb), 64, square=True)
    dense = as_array(model.encode_dense(x[None]))[0]
    segments = _check_same(dense, as_array(model.embed_vocabulary(vocab)), plan, vocab, model.logit_scale, 8,
                           min_area=0)
    assert sum(s.category == "red" for s in segments) >= 1
    assert math.isclose(sum(s.area for s in segments), 64 * 64)
