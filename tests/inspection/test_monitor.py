"""Drift monitoring: the statistics against known answers, then stable vs drift on the embedded world."""

from __future__ import annotations

import json

import numpy as np
import pytest

import densevlm
from densevlm.cli.main import main
from densevlm.errors import DenseVLMError
from densevlm.data.synth import write_world
from densevlm.inspection.monitor import (BatchStats, compare, decide, load_reference, mmd2, permutation_pvalue, psi,
                                         save_reference, signal_weights)


def test_psi_by_hand():
    # (0.25 - 0.5) ln(0.5) + (0.75 - 0.5) ln(1.5)
    assert psi(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(0.25 * np.log(2) + 0.25 * np.log(1.5))
    assert psi(np.array([0.3, 0.7]), np.array([0.3, 0.7])) == pytest.approx(0.0)


def test_mmd_by_hand_and_its_exact_permutation_pvalue():
    # one point each, unit bandwidth: k(0,0) + k(1,1) - 2 k(0,1) = 2 - 2 exp(-1/2)
    assert mmd2(np.array([[0.0]]), np.array([[1.0]]), bandwidth=1.0) == pytest.approx(2 - 2 * np.exp(-0.5))
    # {0, 0} vs {5, 5}: of the 6 splits of 4 points into 2 + 2, the observed one and its mirror are the most
    # extreme, so the exact one-sided p-value is 2 / 6
    z = np.array([[0.0], [0.0], [5.0], [5.0]])
    k = np.exp(-((z - z.T) ** 2) / 2.0)
    observed, p = permutation_pvalue(lambda w: np.einsum("bi,ij,bj->b", w, k, w), 2, 2, 1000, seed=0)
    assert observed == pytest.approx(mmd2(z[:2], z[2:], bandwidth=1.0)) and p == pytest.approx(1 / 3)


def test_simes_and_benjamini_hochberg_by_hand():
    # sorted 0.001, 0.012, 0.03, 0.04 -> m p_(i) / i = 0.004, 0.024, 0.04, 0.04 (already monotone): all four at 0.05
    adjusted, fired = decide([0.03, 0.001, 0.04, 0.012], 0.05)
    assert adjusted == pytest.approx([0.04, 0.004, 0.04, 0.024]) and fired.tolist() == [True] * 4
    # Bonferroni (0.05 / 4 = 0.0125) calls none of these drift; Simes: p_(4) = 0.0126 <= 4 x 0.05 / 4
    assert decide([0.0126] * 4, 0.05)[1].tolist() == [True] * 4
    # two moderately small p-values: m p / i = 0.08, 0.04 -> monotone 0.04, 0.04; Bonferroni: 0.02 > 0.0125
    adjusted, fired = decide([0.02, 0.9, 0.02, 0.5], 0.05)
    assert adjusted == pytest.approx([0.04, 0.9, 0.04, 2 / 3]) and fired.tolist() == [True, False, True, False]
    # one p-value just above alpha / m and nothing else small: stable (0.013 x 4 = 0.052)
    assert not decide([0.2, 0.5, 0.013, 0.9], 0.05)[1].any()
    # a test that could not be computed counts as p = 1
    assert decide([float("nan"), 0.01], 0.05)[0] == pytest.approx([1.0, 0.02])
    for bad in ([], [0.5, 1.2], [-0.1]):
        with pytest.raises(DenseVLMError, match="p-values must be a non-empty list of numbers in"):
            decide(bad, 0.05)


def test_weighted_simes_by_hand():
    # defect_scores holds half of alpha: weights 2 and 2/3 (mean 1) over four signals
    names = ["scores", "defect_scores", "brightness", "sharpness"]
    assert signal_weights(names) == pytest.approx([2 / 3, 2, 2 / 3, 2 / 3])
    assert signal_weights(["scores", "brightness"]).tolist() == [1.0, 1.0]  # no defect_scores: plain Simes
    assert signal_weights(["defect_scores"] + [f"s{i}" for i in range(7)]) == pytest.approx([4] + [4 / 7] * 7)
    # q = p / w = 0.01, 0.75, 1 (capped), 0.45 -> sorted x 4 / i = 0.04, 0.9, 1, 1: only defect_scores fires
    adjusted, fired = decide([0.5, 0.02, 0.9, 0.3], 0.05, signal_weights(names))
    assert adjusted == pytest.approx([1.0, 0.04, 1.0, 0.9]) and fired.tolist() == [False, True, False, False]
    assert not decide([0.5, 0.02, 0.9, 0.3], 0.05)[1].any()  # equal weights: 0.02 x 4 = 0.08
    # scores alone at 0.01 fires without weights (0.04) but not with weight 2/3 (0.06)
    assert decide([0.01, 0.5, 0.9, 0.3], 0.05)[1].any() and not decide([0.01, 0.5, 0.9, 0.3], 0.05,
                                                                       signal_weights(names))[1].any()
    with pytest.raises(DenseVLMError, match="weights must be 2 positive numbers of mean 1"):
        decide([0.1, 0.2], 0.05, [1.5, 1.0])


def test_decide_is_simes_test_and_benjamini_hochberg_on_random_p_values():
    rng = np.random.default_rng(7)
    for _ in range(200):
        m = int(rng.integers(1, 10))
        p = np.where(rng.random(m) < 0.3, rng.random(m) * 0.03, rng.random(m))
        alpha = float(rng.choice([0.01, 0.05, 0.1]))
        adjusted, fired = decide(p, alpha)
        order = np.argsort(p)
        ranked = p[order] * m / np.arange(1, m + 1)
        expected = np.empty(m)
        expected[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
        assert adjusted == pytest.approx(expected)
        assert fired.any() == bool(np.any(np.sort(p) <= alpha * np.arange(1, m + 1) / m))  # Simes (1986)
        assert fired.tolist() == (expected <= alpha).tolist()
        w = rng.random(m) + 0.1
        w = w / w.mean()
        adjusted, fired = decide(p, alpha, w)
        q = np.minimum(p / w, 1.0)
        assert fired.any() == bool(np.any(np.sort(q) <= alpha * np.arange(1, m + 1) / m))  # weighted Simes
        assert adjusted == pytest.approx(decide(q, alpha)[0])


def _stats(rng, n, shift=0.0, darker=0.0, blurred=1.0):
    emb = rng.normal(size=(n, 8)) + shift
    image = np.c_[rng.normal(0.5, 0.05, n) - darker, rng.normal(0.02, 0.004, n) * blurred]
    return BatchStats(rng.dirichlet(np.ones(5), n), rng.random((n, 2)), rng.random(n),
                      emb / np.linalg.norm(emb, axis=1, keepdims=True), image, defect_indices=(3, 4))


def test_compare_on_synthetic_statistics():
    rng = np.random.default_rng(0)
    ref = _stats(rng, 200)
    stable = compare(ref, _stats(rng, 80), n_resamples=300)
    assert stable["verdict"] == "stable" and stable["rule"] == "weighted-simes" and stable["alpha"] == 0.05
    assert stable["signals"]["defect_scores"]["weight"] == 4.0 and stable["signals"]["scores"]["weight"] == pytest.approx(4 / 7)
    assert all(s["p_adjusted"] > 0.05 and s["p_adjusted"] >= s["p_value"] for s in stable["signals"].values())
    moved = _stats(rng, 80, shift=0.8)
    moved.defect_scores = moved.defect_scores + 0.3
    report = compare(ref, moved, n_resamples=300)
    assert report["verdict"] == "drift" and set(report["fired"]) == {"embeddings", "scores", "defect_scores"}
    assert any("re-calibrate" in a for a in report["actions"])
    dark = compare(ref, _stats(rng, 80, darker=0.1), n_resamples=300)
    assert dark["fired"] == ["brightness"] and "lighting" in dark["actions"][0]
    soft = compare(ref, _stats(rng, 80, blurred=0.5), n_resamples=300)
    assert soft["fired"] == ["sharpness"] and "focus" in soft["actions"][0]
    with pytest.raises(DenseVLMError, match="use at least 280 permutations"):  # 0.05 x (4 / 7) / 8 = 1 / 280
        compare(ref, moved, n_resamples=250)


def test_defect_mix_fires_when_one_defect_is_replaced():
    # class 3 and 4 are the defects; the batch shows class 4 where the reference showed class 3
    rng = np.random.default_rng(1)
    ref, batch = _stats(rng, 200), _stats(rng, 80)
    for stats, col in ((ref, 3), (batch, 4)):
        shares = np.zeros_like(stats.class_shares)
        shares[:, :3] = rng.dirichlet(np.ones(3), len(stats)) * 0.9
        shares[:, col] = 0.1
        stats.class_shares = shares
    assert np.allclose(batch.defect_mix, np.c_[np.zeros(80), np.full(80, 0.1), np.full(80, 0.9)])
    report = compare(ref, batch, n_resamples=300)
    assert "defect_mix" in report["fired"] and report["signals"]["defect_mix"]["p_value"] < 0.01


def _defect_scores(rng, n, novel=0.0):
    """``[n, 2]`` defect scores: half OK images (both low); half NG images, each with one defect high
    (Beta(8, 2)) and the other low; with ``novel``, that share of the NG images is a defect the
    reference never had, as high on both defects (the second 0.9 x the first, so the NG score, the
    larger one, keeps the reference's distribution)."""
    out = rng.beta(1, 20, size=(n, 2))
    ng = np.flatnonzero(np.arange(n) % 2 == 1)
    high = rng.beta(8, 2, size=len(ng))
    which = rng.integers(0, 2, size=len(ng))
    out[ng, which] = high
    new = ng[rng.random(len(ng)) < novel]
    out[new, 0] = rng.beta(8, 2, size=len(new))
    out[new, 1] = 0.9 * out[new, 0]
    return out


def test_defect_scores_fires_on_a_novel_defect_cluster_only():
    rng = np.random.default_rng(5)
    ref, same, novel = _stats(rng, 300), _stats(rng, 100), _stats(rng, 100)
    ref.defect_scores = _defect_scores(np.random.default_rng(10), 300)
    same.defect_scores = _defect_scores(np.random.default_rng(11), 100)
    novel.defect_scores = _defect_scores(np.random.default_rng(11), 100, novel=0.5)
    stable = compare(ref, same, n_resamples=1000)
    assert stable["verdict"] == "stable" and stable["signals"]["defect_scores"]["p_value"] > 0.05
    report = compare(ref, novel, n_resamples=1000)
    assert report["fired"] == ["defect_scores"] and "a defect appeared" in report["actions"][0]
    assert report["signals"]["defect_scores"]["p_value"] < 0.05 / 8 < report["signals"]["scores"]["p_value"]
    assert report["signals"]["defect_scores"]["p_adjusted"] == pytest.approx(report["signals"]["defect_scores"]["p_value"] / 4 * 8)


def test_without_defects_there_are_no_defect_signals():
    rng = np.random.default_rng(3)
    ref, batch = _stats(rng, 50), _stats(rng, 30)
    for stats in (ref, batch):
        stats.defect_scores, stats.defect_indices = np.zeros((len(stats), 0)), ()
    report = compare(ref, batch, n_resamples=200)
    assert set(report["signals"]) == {"class_shares", "scores", "low_confidence", "embeddings", "brightness", "sharpness"}
    adjusted = decide([s["p_value"] for s in report["signals"].values()], 0.05)[0]  # 6 signals of weight 1
    assert [s["p_adjusted"] for s in report["signals"].values()] == pytest.approx(adjusted) and np.all(batch.scores == 0)


def test_reference_keeps_defect_scores_and_refuses_the_older_format(tmp_path):
    stats = _stats(np.random.default_rng(2), 12)
    path = save_reference(tmp_path / "ref.json", stats, {"model": {"name": "m"}})
    loaded, meta = load_reference(path)
    assert loaded.defect_scores.shape == (12, 2) and np.allclose(loaded.scores, stats.defect_scores.max(axis=1))
    assert meta == {"model": {"name": "m"}}
    doc = json.loads(path.read_text())
    doc["schema"] = "densevlm.monitor_reference/2"
    path.write_text(json.dumps(doc))
    with pytest.raises(DenseVLMError, match=r"older format \(densevlm.monitor_reference/2\); rebuild it with --save-reference"):
        load_reference(path)


@pytest.fixture(scope="module")
def line(tmp_path_factory):
    root = tmp_path_factory.mktemp("line")
    write_world(root / "ref", 60, seed=21, defect_rate=0.5, progress=False)
    write_world(root / "same", 40, seed=22, defect_rate=0.5, progress=False)
    write_world(root / "dark", 40, seed=22, defect_rate=0.5, shift="lighting", progress=False)
    return root


@pytest.fixture(scope="module")
def shifted_reports(line, tmp_path_factory):
    """The drift report of every shift kind (40 images each) against the 60-image reference."""
    from densevlm.data.synth import default_vocabulary
    from densevlm.data.synth.inspection import SHIFTS
    from densevlm.data.synth.writer import generate_scene
    from densevlm.inspection.scores import ScoreConfig, analyse_images
    from PIL import Image

    model, vocab = densevlm.load_model("tiny-student"), default_vocabulary()
    cfg = ScoreConfig().resolved(model)

    def stats(seed, n, shift):
        images = [Image.fromarray(generate_scene(seed, i, 64, defect_rate=0.5, shift=shift).image) for i in range(n)]
        return BatchStats.from_analyses(list(analyse_images(model, images, vocab, cfg)), vocab.defect_indices)

    reference = stats(21, 80, None)
    return {kind: compare(reference, stats(23, 40, None if kind == "none" else kind), n_resamples=500)
            for kind in ("none", *SHIFTS)}


@pytest.mark.parametrize("kind", ["none", "lighting", "blur", "new-surface", "camera"])
def test_monitor_verdict_per_shift_kind(shifted_reports, kind):
    report = shifted_reports[kind]
    assert report["verdict"] == ("stable" if kind == "none" else "drift")
    assert len(report["actions"]) == len(report["fired"])


def test_image_signals_name_the_shift(shifted_reports):
    assert "brightness" in shifted_reports["lighting"]["fired"]
    assert "sharpness" in shifted_reports["blur"]["fired"] and "sharpness" in shifted_reports["camera"]["fired"]
    assert shifted_reports["blur"]["signals"]["sharpness"]["batch_mean"] < shifted_reports["blur"]["signals"]["sharpness"]["reference_mean"]


def test_monitor_says_stable_for_the_same_world_and_drift_for_a_darker_line(line, tmp_path, capsys):
    ref = tmp_path / "ref.json"
    assert main(["monitor", "--model", "tiny-student", "--reference", str(line / "ref"), "--save-reference", str(ref),
                 "--batch", str(line / "same"), "--json", str(tmp_path / "same.json"), "--history", str(tmp_path / "h"),
                 "--permutations", "300"]) == 0
    same = json.loads((tmp_path / "same.json").read_text())
    assert same["verdict"] == "stable" and "defect_scores" in same["signals"]
    assert "MMD^2 of per-image defect scores" in same["signals"]["defect_scores"]["test"]
    assert json.loads(ref.read_text())["schema"] == "densevlm.monitor_reference/3"
    assert same["rule"] == "weighted-simes" and all(0 <= s["p_adjusted"] <= 1 for s in same["signals"].values())
    out = capsys.readouterr().out
    assert " defect_scores " in out and " adjusted " in out
    status = main(["monitor", "--model", "tiny-student", "--reference", str(ref), "--batch", str(line / "dark"),
                   "--json", str(tmp_path / "dark.json"), "--history", str(tmp_path / "h"), "--fail-on-drift",
                   "--permutations", "300"])
    report = json.loads((tmp_path / "dark.json").read_text())
    assert status == 1 and report["verdict"] == "drift" and report["fired"] and report["actions"]
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == ["0001-same.json", "0002-dark.json"]
    capsys.readouterr()
    assert main(["monitor", "--model", "tiny-teacher", "--reference", str(ref), "--batch", str(line / "dark")]) == 2
    assert "another model or vocabulary" in capsys.readouterr().err
    again = ["monitor", "--model", "tiny-student", "--reference", str(ref), "--batch", str(line / "dark"),
             "--json", str(tmp_path / "dark.json")]
    assert main(again) == 2
    assert f"--json {tmp_path / 'dark.json'}: exists already; pass --overwrite" in capsys.readouterr().err
    assert main(["monitor", "--model", "tiny-student", "--reference", str(ref), "--save-reference", str(ref),
                 "--overwrite"]) == 2
    assert "is also an input of this command" in capsys.readouterr().err


def test_without_model_monitor_takes_the_one_the_reference_or_operating_point_records(line, tmp_path, capsys):
    ref = tmp_path / "ref.json"
    assert main(["monitor", "--model", "tiny-teacher", "--reference", str(line / "ref"), "--save-reference",
                 str(ref)]) == 0
    assert main(["monitor", "--reference", str(ref), "--batch", str(line / "same"), "--json", str(tmp_path / "r.json"),
                 "--permutations", "300"]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text())["verdict"] == "stable"
    assert main(["monitor", "--model", "tiny-student", "--reference", str(ref), "--batch", str(line / "same")]) == 2
    assert "another model or vocabulary" in capsys.readouterr().err


def test_a_batch_with_unreadable_files_is_judged_on_the_others(line, tmp_path, capsys):
    import shutil

    batch = tmp_path / "batch"
    shutil.copytree(line / "same" / "images", batch)
    (batch / "broken.png").write_bytes(b"not a png")
    (batch / "dot.png").write_bytes((line / "same" / "images" / "000000.png").read_bytes()[:0])
    ref = tmp_path / "ref.json"
    assert main(["monitor", "--model", "tiny-student", "--reference", str(line / "ref"), "--save-reference", str(ref)]) == 0
    capsys.readouterr()
    assert main(["monitor", "--reference", str(ref), "--batch", str(batch), "--json", str(tmp_path / "r.json"),
                 "--permutations", "300"]) == 0
    captured = capsys.readouterr()
    assert f"{batch}: 2 of 42 images skipped (listed above); the statistics are of the other 40" in captured.out
    assert "broken.png" in captured.err and "dot.png" in captured.err
    assert json.loads((tmp_path / "r.json").read_text())["verdict"] == "stable"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"junk")
    assert main(["monitor", "--reference", str(ref), "--batch", str(tmp_path / "bad")]) == 2
    assert "none of the 1 images could be read" in capsys.readouterr().err


def test_evaluate_inspection_metrics(labelled_world):
    import densevlm.data.panoptic as panoptic
    from densevlm.inspection.evaluate import evaluate_inspection
    from densevlm.data.synth import default_vocabulary

    vocab = default_vocabulary()
    out = evaluate_inspection(densevlm.load_model("tiny-student"), labelled_world, vocab)
    data = panoptic.PanopticDataset(labelled_world)
    names = {c["id"]: c["name"] for c in data.categories}
    n_defect_segments = sum(names[s["category_id"]] in vocab.defects for _, ann in data.records for s in ann["segments_info"])
    assert np.sum(out["inspection.confusion"]["counts"]) == n_defect_segments
    for d, entry in out["inspection.per_defect"].items():
        assert entry["n"] == sum(any(names[s["category_id"]] == d for s in ann["segments_info"]) for _, ann in data.records)
    assert out["inspection.n_ok"] + out["inspection.n_ng"] == 24
    for key in ("image_auroc", "recall_at_fa_0.01", "recall_at_fa_0.05", "aupro"):
        assert 0.0 <= out[f"inspection.{key}"] <= 1.0
    assert out["inspection.recall_at_fa_0.01"] <= out["inspection.recall_at_fa_0.05"]


def test_a_reference_that_is_neither_images_nor_ref_json_names_both_forms(line, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("calibration images are in calib/\n")
    assert main(["monitor", "--model", "tiny-student", "--reference", str(notes), "--batch", str(line / "same")]) == 2
    err = capsys.readouterr().err
    assert f"--reference {notes}: neither images" in err and "ref.json saved by --save-reference" in err
    assert "Traceback" not in err


def test_inspection_metrics_skip_an_image_too_thin_to_inspect(tmp_path, caplog):
    from PIL import Image

    from densevlm.inspection.evaluate import evaluate_inspection

    world = tmp_path / "line"
    write_world(world, 6, seed=11, defect_rate=0.5, progress=False)
    for folder, resample in (("images", Image.BICUBIC), ("panoptic", Image.NEAREST)):
        path = world / folder / "000000.png"
        Image.open(path).resize((640, 4), resample).save(path)
    out = evaluate_inspection(densevlm.load_model("tiny-student"), world)
    assert out["inspection.n_skipped"] == 1 and out["inspection.n_ok"] + out["inspection.n_ng"] == 5
    assert "000000.png: image is 640x4 px, too small" in caplog.text
