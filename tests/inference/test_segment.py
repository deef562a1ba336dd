"""``densevlm.segment``: label maps against independent computations, segments, RLE, JSON, boxes."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

import densevlm
from densevlm.data.synth import default_vocabulary, generate_scene
from densevlm.errors import DenseVLMError
from densevlm.inference.segment import predict
from densevlm.vocab import Vocabulary
from tests.conftest import perturb_
from tests.inference.helpers import PaletteStub, check_segment_json, paint


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    torch.manual_seed(1234)
    model = densevlm.load_model("tiny-vit")
    perturb_(model.backbone.clip, seed=11)
    return model


@pytest.fixture(scope="module")
def vocab():
    return default_vocabulary()


def _independent_argmax(model, image: Image.Image, vocab, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Class and winning softmax probability per content pixel, straight from the model's encoders."""
    x, plan = model.prepare(image, size, square=True)
    with torch.no_grad():
        dense = model.encode_dense(x[None])[0]
        text = model.embed_vocabulary(vocab)
    logits = model.logit_scale * torch.einsum("kc,chw->khw", text, dense)
    up = F.interpolate(logits[None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0]
    up = up[:, : plan.height, : plan.width]
    return up.argmax(0).numpy(), up.softmax(0).max(0).values.numpy()


def test_label_map_is_the_models_own_argmax_for_a_letterboxed_image(tiny, vocab):
    scene = generate_scene(seed=5, index=0, size=64)
    image = Image.fromarray(scene.image[:48])  # 64 x 48: padded to a 64 x 64 square input
    result = densevlm.segment(tiny, image, vocab, size=64)
    expected, prob = _independent_argmax(tiny, image, vocab)
    assert result.labels.shape == (48, 64) and result.labels.dtype == np.uint8
    assert len(np.unique(expected)) > 3  # a perturbed random model predicts several classes
    np.testing.assert_array_equal(result.labels, expected)
    np.testing.assert_allclose(result.scores, prob, rtol=1e-5, atol=1e-6)
    assert result.scores.dtype == np.float32


def test_maps_are_mapped_back_to_the_original_size(tiny, vocab):
    scene = generate_scene(seed=5, index=1, size=64)
    small = Image.fromarray(scene.image[:48])
    big = small.resize((128, 96), Image.NEAREST)  # letterboxed back to the same 64 x 48 content
    result = densevlm.segment(tiny, big, vocab, size=64)
    content, _ = _independent_argmax(tiny, big, vocab)
    assert result.labels.shape == (96, 128) and result.scores.shape == (96, 128)
    np.testing.assert_array_equal(result.labels, np.repeat(np.repeat(content, 2, axis=0), 2, axis=1))
    assert result.model == "tiny-vit"  # random weights: the architecture names the model
    shipped = densevlm.segment(densevlm.load_model("tiny-student"), big, vocab, size=64)
    assert shipped.model == "tiny-student" and shipped.to_json()["model"] == "tiny-student"  # where the weights came from
    text = repr(result)  # one line of what it holds, not its arrays or RLE strings
    assert text.startswith(f"SegmentResult(128x96, {len(result.segments)} segments (regions)") and len(text) < 300
    assert result.class_areas()[0][0] in text and "\n" not in text


def test_label_map_is_a_nearest_resize_of_the_content_map(tiny, vocab):
    image = Image.fromarray(generate_scene(seed=5, index=3, size=64).image).resize((120, 120), Image.BILINEAR)
    result = densevlm.segment(tiny, image, vocab, size=56)
    content, _ = _independent_argmax(tiny, image, vocab, size=56)
    assert content.shape == (56, 56)
    # 56 -> 120 px: a pixel centre never falls on a content-pixel border, so PIL's nearest is unambiguous
    expected = np.asarray(Image.fromarray(content.astype(np.uint8)).resize((120, 120), Image.NEAREST))
    np.testing.assert_array_equal(result.labels, expected)


@pytest.mark.parametrize("size", [(64, 64), (100, 75), (40, 30)])  # same as the input, upscaled, downscaled
def test_segments_are_connected_regions_with_exact_rle(tiny, vocab, size):
    scene = generate_scene(seed=5, index=2, size=64)
    image = Image.fromarray(scene.image).resize(size, Image.BILINEAR)
    result = densevlm.segment(tiny, image, vocab, size=64, top_k=3, min_area=0)
    width, height = size
    assert result.labels.shape == (height, width)
    assert len(result.segments) > 3
    covered = np.zeros(result.labels.shape, dtype=int)
    for seg in result.segments:
        mask = seg.mask()
        components, _ = ndimage.label(result.labels == seg.category_index, structure=np.ones((3, 3)))
        expected = components == components[seg.anchor[1], seg.anchor[0]]
        np.testing.assert_array_equal(mask, expected)
        assert seg.area == int(mask.sum())
        ys, xs = np.nonzero(mask)
        assert seg.bbox == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert seg.score == pytest.approx(float(result.scores[mask].mean()), rel=1e-5)
        assert len(seg.topk) == 3
        if size == (64, 64):  # original = model input: the model's own mask pooling is the reference
            x, _ = tiny.prepare(image, 64, square=True)
            with torch.no_grad():
                feature = tiny.encode_masks(x[None], [torch.from_numpy(mask)[None]])
                probs = (tiny.logit_scale * feature @ tiny.embed_vocabulary(vocab).t()).softmax(-1)[0]
            best = probs.topk(3)
            assert [name for name, _ in seg.topk] == [vocab.names[i] for i in best.indices.tolist()]
            np.testing.assert_allclose([p for _, p in seg.topk], best.values.numpy(), rtol=1e-4)
        covered += mask
    np.testing.assert_array_equal(covered, 1)  # with min_area=0 every pixel is in exactly one segment
    areas = [s.area for s in result.segments]
    assert areas == sorted(areas, reverse=True)
    check_segment_json(json.loads(json.dumps(result.to_json())), width, height, list(vocab.names))


def test_min_area_drops_specks_but_not_their_pixels():
    model = PaletteStub(3)
    vocab = Vocabulary.from_lists(["red", "green"], ["blue"])
    rgb, truth = paint((64, 64), [(0, (8, 8, 32, 32)), (1, (40, 40, 48, 48))], background=2)
    kept = densevlm.segment(model, Image.fromarray(rgb), vocab, min_area=0)
    assert sorted(s.category for s in kept.segments) == ["blue", "green", "red"]
    default = densevlm.segment(model, Image.fromarray(rgb), vocab)
    assert default.min_area == 32  # half a token: 0.5 * 8 * 8 at scale 1
    assert sorted(s.category for s in default.segments) == ["blue", "green", "red"]
    strict = densevlm.segment(model, Image.fromarray(rgb), vocab, min_area=65)
    assert sorted(s.category for s in strict.segments) == ["blue", "red"]  # the 8x8 green square is a speck
    np.testing.assert_array_equal(strict.labels, kept.labels)
    assert (strict.labels == 1).sum() > 32


def _only_near_corners(labels: np.ndarray, truth: np.ndarray, rects) -> bool:
    """True when every pixel that differs from the painted truth is within half a token (4 px) of a
    rectangle corner, where bilinear upsampling of one-hot logits rounds the corner off."""
    corners = [(x, y) for _, (x1, y1, x2, y2) in rects for x in (x1, x2) for y in (y1, y2)]
    ys, xs = np.nonzero(labels != truth)
    return all(any(abs(x + 0.5 - cx) < 4 and abs(y + 0.5 - cy) < 4 for cx, cy in corners) for x, y in zip(xs, ys))


def test_stub_with_known_answers_gives_exact_maps_segments_and_probabilities():
    model = PaletteStub(4)
    vocab = Vocabulary.from_lists(["bolt", "nut"], ["belt", "floor"])
    rects = [(0, (8, 8, 24, 24)), (1, (40, 16, 64, 40)), (2, (0, 40, 16, 64))]
    rgb, truth = paint((64, 64), rects, background=3)  # square: no letterbox padding
    result = densevlm.segment(model, Image.fromarray(rgb), vocab, top_k=2, min_area=0)
    assert (result.labels == truth).mean() > 0.97
    assert _only_near_corners(result.labels, truth, rects)
    by_category = {s.category: s for s in result.segments}
    assert set(by_category) == {"bolt", "nut", "belt", "floor"}
    assert by_category["bolt"].bbox == (8, 8, 24, 24)
    assert 256 - 4 * 8 <= by_category["bolt"].area < 256  # the square less its rounded-off corners
    assert by_category["nut"].bbox == (40, 16, 64, 40) and by_category["nut"].isthing
    assert not by_category["belt"].isthing
    pure = model.pure_probability()
    for seg in result.segments:
        assert seg.topk[0][0] == seg.category
        assert 0.5 * pure < seg.score < pure
    interior = result.scores[12:20, 12:20]
    np.testing.assert_allclose(interior, pure, rtol=1e-5)
    assert by_category["bolt"].topk[0][1] == pytest.approx(pure, rel=1e-6)  # pooled over pure red tokens only


def test_boxes_are_classified_from_roi_features():
    model = PaletteStub(4)
    vocab = Vocabulary.from_lists(["bolt", "nut"], ["belt", "floor"])
    rgb, _ = paint((64, 48), [(0, (8, 8, 24, 24)), (1, (40, 16, 64, 40))], background=3)
    boxes = [[8, 8, 24, 24], [40.5, 16, 64, 40], [0, 0, 64, 48]]
    result = densevlm.segment(model, Image.fromarray(rgb), vocab, boxes=boxes)
    assert result.mode == "boxes"
    assert [s.category for s in result.segments] == ["bolt", "nut", "floor"]
    assert [s.source for s in result.segments] == ["box"] * 3
    assert result.segments[1].bbox == (40.5, 16, 64, 40)
    assert result.segments[1].area == 24 * 24  # pixels touched by the box
    assert result.segments[2].area == 64 * 48
    check_segment_json(json.loads(json.dumps(result.to_json())), 64, 48, list(vocab.names))


def test_boxes_up_to_one_pixel_past_the_edge_are_clipped_with_a_warning(caplog):
    model = PaletteStub(4)
    vocab = Vocabulary.from_lists(["bolt", "nut"], ["belt", "floor"])
    rgb, _ = paint((64, 48), [(1, (40, 16, 64, 40))], background=3)
    with caplog.at_level(logging.WARNING, logger="densevlm"):
        result = densevlm.segment(model, Image.fromarray(rgb), vocab, boxes=[[40, 16, 64.6, 40], [-0.4, -1, 8, 8]])
    assert [s.bbox for s in result.segments] == [(40, 16, 64, 40), (0, 0, 8, 8)]
    assert result.segments[0].category == "nut"
    assert "2 boxes up to 1 px past the 64x48 image clipped to it" in caplog.text


@pytest.mark.parametrize("box, problem", [
    ([10, 10, 5, 20], "inverted"),
    ([10, 10, 10, 20], "inverted"),
    ([0, 0, 65.5, 20], "outside the 64x48 image"),
    ([-1.5, 0, 10, 20], "outside the image"),
    ([64, 0, 65, 20], "outside the 64x48 image"),
    ([-1, 0, 0, 20], "outside the image"),
])
def test_bad_boxes_are_one_line_errors(tmp_path, box, problem):
    model = PaletteStub(4)
    vocab = Vocabulary.from_lists(["bolt", "nut"], ["belt", "floor"])
    rgb, _ = paint((64, 48), [], background=3)
    path = tmp_path / "part.png"
    Image.fromarray(rgb).save(path)
    with pytest.raises(DenseVLMError) as err:
        densevlm.segment(model, path, vocab, boxes=[[0, 0, 8, 8], box])
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "box 1" in message and problem in message


def test_api_accepts_paths_and_reads_any_mode(tmp_path):
    model = PaletteStub(4)
    vocab = Vocabulary.from_lists(["bolt", "nut"], ["belt", "floor"])
    rgb, _ = paint((64, 48), [(0, (8, 8, 24, 24))], background=3)
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    vocab_file = tmp_path / "vocab.txt"
    vocab.save(vocab_file)
    result = densevlm.segment(model, tmp_path / "rgba.png", vocab_file)
    np.testing.assert_array_equal(result.labels, densevlm.segment(model, Image.fromarray(rgb), vocab).labels)
    assert [s.category for s in result.segments] == ["floor", "bolt"]
    assert result.file == str(tmp_path / "rgba.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DenseVLMError, match="broken.png: not a readable image"):
        densevlm.segment(model, tmp_path / "broken.png", vocab)


def test_large_vocabularies_give_16_bit_label_maps():
    torch.manual_seed(0)
    k = 300
    vocab = Vocabulary.from_lists([f"part {i}" for i in range(k)], [])
    dense = F.normalize(torch.randn(8, 4, 4), dim=0)
    text = F.normalize(torch.randn(k, 8), dim=1)
    plan = densevlm.imaging.plan_letterbox(32, 32, 32, 8, square=True)
    labels, scores, segments, _ = predict(dense, text, plan, vocab, logit_scale=50.0, patch_size=8, min_area=0)
    up = F.interpolate(50.0 * torch.einsum("kc,chw->khw", text, dense)[None], size=(32, 32), mode="bilinear",
                       align_corners=False)[0]
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(labels, up.argmax(0).numpy())
    assert labels.max() > 255 or len(np.unique(labels)) > 1
    assert sum(s.area for s in segments) == 32 * 32


def test_overlay_upscales_small_images_tints_stuff_and_outlines_things():
    from densevlm.inference.overlay import palette

    model = PaletteStub(4)
    vocab = Vocabulary.from_lists(["bolt", "nut"], ["belt", "floor"])
    grey = np.full((48, 64, 3), 100, dtype=np.uint8)
    rgb, _ = paint((64, 48), [(0, (8, 8, 40, 40))], background=3)
    result = densevlm.segment(model, Image.fromarray(rgb), vocab)
    picture = np.asarray(result.overlay(image=Image.fromarray(grey)))
    factor = 8  # 64 px -> 512 px
    assert picture.shape[0] == 48 * factor and picture.shape[1] > 64 * factor  # legend panel on the right
    colours = palette(4)
    assert np.array_equal(palette(4), colours) and len({tuple(c) for c in palette(40)}) == 40
    floor_pixel = picture[44 * factor, 60 * factor]
    assert np.abs(floor_pixel.astype(int) - (0.55 * 100 + 0.45 * colours[3])).max() <= 1  # stuff tinted
    np.testing.assert_array_equal(picture[20 * factor, 8 * factor], colours[0])  # thing outline on its left edge
    np.testing.assert_array_equal(picture[38 * factor, 24 * factor], grey[0, 0])  # thing interior untouched
    legend = picture[:, 64 * factor:]
    assert (legend == colours[3]).all(axis=-1).any() and (legend == colours[0]).all(axis=-1).any()
