"""Adapted vocabularies: the blend formula, the modality-gap shift, the .npz file and its refusals."""

from __future__ import annotations

import numpy as np
import pytest

from densevlm.errors import DenseVLMError
from densevlm.vocab import AdaptedVocabulary, Vocabulary, load_vocabulary
from densevlm.vocab.adapted import (adapted, bias_direction, blend, calibrate_bias, discriminant, gap_shift,
                                    save_adapted)


def test_blend_matches_the_hand_computed_formula():
    text = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    protos = np.array([[0.0, 2.0, 0.0], [5.0, 5.0, 5.0], [0.0, 0.0, 3.0]])
    out = blend(text, protos, np.array([1, 0, 2]), k0=3.0)
    # class 0: w = 1/4 -> (0.75, 0.25, 0) normalised; class 1: unreviewed -> its text;
    # class 2: no text -> its prototype direction
    np.testing.assert_allclose(out[0], np.array([0.75, 0.25, 0.0]) / np.hypot(0.75, 0.25), rtol=1e-6)
    np.testing.assert_allclose(out[1], [0.0, 1.0, 0.0])
    np.testing.assert_allclose(out[2], [0.0, 0.0, 1.0])
    many = blend(text[:1], np.array([[0.0, 1.0, 0.0]]), np.array([1000]), k0=3.0)
    assert many[0, 1] > 0.99, "many regions: the prototype dominates"


def test_blend_refuses_bad_input():
    with pytest.raises(DenseVLMError, match="do not match"):
        blend(np.zeros((2, 3)), np.zeros((3, 3)), np.zeros(2))
    with pytest.raises(DenseVLMError, match="neither a text embedding nor reviewed regions"):
        blend(np.zeros((1, 3)), np.zeros((1, 3)), np.zeros(1))
    with pytest.raises(DenseVLMError, match="k0 must be > 0"):
        blend(np.eye(2), np.eye(2), np.ones(2), k0=0)


def test_gap_shift_moves_prototypes_by_the_difference_of_means():
    p = np.array([[1.0, 0.0]])
    out = gap_shift(p, image_mean=np.array([0.5, 0.5]), text_mean=np.array([-0.5, 1.5]))
    np.testing.assert_allclose(out, [[0.0, 1.0]], atol=1e-12)


def test_discriminant_matches_the_hand_computed_direction():
    negatives = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    # mean 0, covariance diag(8/3, 2/3), mean variance 5/3; lambda 0.2 adds 1/3: diag(3, 1)
    means = np.array([[3.0, 1.0], [5.0, 5.0]])
    out = discriminant(means, np.array([4, 0]), negatives, shrinkage=0.2)
    np.testing.assert_allclose(out[0], np.array([1.0, 1.0]) / np.sqrt(2), rtol=1e-12)  # diag(3, 1)^-1 (3, 1)
    np.testing.assert_array_equal(out[1], [0.0, 0.0])  # no reviewed regions
    with pytest.raises(DenseVLMError, match="at least 2 negative"):
        discriminant(means, np.array([4, 0]), negatives[:1])
    with pytest.raises(DenseVLMError, match="shrinkage must be > 0"):
        discriminant(means, np.array([4, 0]), negatives, shrinkage=0.0)


def test_bias_direction_scores_the_mean_one():
    mu = np.array([0.5, 0.0, 0.25])
    np.testing.assert_allclose(bias_direction(mu) @ mu, 1.0)
    with pytest.raises(DenseVLMError, match="zero"):
        bias_direction(np.zeros(3))


def test_calibrate_bias_hits_the_hand_computed_threshold():
    emb = np.array([[0.0, 1.0], [1.0, 0.0]])  # class 0 unreviewed, class 1 reviewed
    u = bias_direction(np.array([0.5, 0.0]))  # [2, 0]
    neg = np.array([[0.6, 0.8], [0.8, 0.6], [1.0, 0.0], [0.28, 0.96], [-1.0, 0.0]])  # the last: g < 0, left out
    # t = (c - s) / g: (0.8-0.6)/1.2, (0.6-0.8)/1.6, (0-1)/2, (0.96-0.28)/0.56 -> sorted -0.5, -0.125, 1/6, 1.214
    reviewed = np.array([False, True])
    for rate, expected in ((0.0, -0.5), (0.25, -0.125), (0.45, -0.125), (0.5, 1 / 6), (0.99, 0.68 / 0.56)):
        bias = calibrate_bias(emb, reviewed, neg, u, rate)
        assert bias[0] == 0.0
        np.testing.assert_allclose(bias[1], expected - 1e-6, rtol=0, atol=1e-12)  # just below the threshold
        kept = neg[:4]
        wins = int(((kept @ (emb[1] + bias[1] * u)) > kept @ emb[0]).sum())
        assert wins <= int(rate * 4)
    assert calibrate_bias(emb, np.array([True, True]), neg, u, 0.1).tolist() == [0.0, 0.0], "no competitor"
    assert calibrate_bias(emb, reviewed, neg[4:], u, 0.1).tolist() == [0.0, 0.0], "no usable negative"
    with pytest.raises(DenseVLMError, match=r"rate must be in \[0, 1\)"):
        calibrate_bias(emb, reviewed, neg, u, 1.0)


def _adapted() -> AdaptedVocabulary:
    vocab = Vocabulary.from_lists(["bolt", ["porosity", "pores"]], ["steel plate"])
    emb = np.eye(3, 4, dtype=np.float32)
    return adapted(vocab, emb, "ab" * 32, np.array([0, 4, 1]), 3.0, source="test", bias=np.array([0.0, -0.25, 0.5]),
                   negative_rate=0.01)


def test_npz_round_trip_and_dispatch(tmp_path):
    vocab = _adapted()
    save_adapted(vocab, tmp_path / "v.npz")
    back = load_vocabulary(tmp_path / "v.npz")
    assert isinstance(back, AdaptedVocabulary)
    assert (back.names, back.synonyms, back.is_thing) == (vocab.names, vocab.synonyms, vocab.is_thing)
    np.testing.assert_array_equal(back.embeddings, vocab.embeddings)
    assert back.counts == (0, 4, 1) and back.model_sha256 == "ab" * 32 and back.source == str(tmp_path / "v.npz")
    assert back.bias == (0.0, -0.25, 0.5) and back.negative_rate == 0.01
    assert back.adaptation == vocab.method == "blend"
    assert Vocabulary(back.names, back.synonyms, back.is_thing).adaptation is None
    with np.load(tmp_path / "v.npz", allow_pickle=False) as data:
        assert set(data.files) >= {"names", "is_thing", "defects", "embeddings", "model_sha256"}
    back.check_model("ab" * 32)
    with pytest.raises(DenseVLMError, match="adapted for another model") as e:
        back.check_model("cd" * 32)
    assert "\n" not in str(e.value) and "v.npz" in str(e.value)


def test_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(DenseVLMError, match="not found"):
        load_vocabulary(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DenseVLMError, match="not a readable adapted vocabulary"):
        load_vocabulary(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DenseVLMError, match="not an adapted vocabulary"):
        load_vocabulary(tmp_path / "other.npz")
    with pytest.raises(DenseVLMError, match="3 embeddings, 2 counts"):
        adapted(Vocabulary.from_lists(["a", "b"], ["c"]), np.eye(3), "x", np.zeros(2), 3.0)


def test_an_older_format_is_refused_with_one_line(tmp_path):
    save_adapted(_adapted(), tmp_path / "v.npz")
    with np.load(tmp_path / "v.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k not in ("bias", "negative_rate")}
    np.savez(tmp_path / "old.npz", **{**arrays, "format": np.array("densevlm.adapted_vocabulary/1")})
    with pytest.raises(DenseVLMError, match="older densevlm.*vocab adapt` again") as e:
        load_vocabulary(tmp_path / "old.npz")
    assert "\n" not in str(e.value) and "old.npz" in str(e.value)
