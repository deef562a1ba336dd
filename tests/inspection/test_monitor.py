"""Drift monitoring: the statistics against known answers, then stable vs drift on the embedded world."""

from __future__ import annotations

import json

import numpy as np
import pytest

import densevlm
from densevlm.cli.main import main
from densevlm.data.synth import write_world
from densevlm.inspection.monitor import BatchStats, compare, mmd2, permutation_pvalue, psi


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


def _stats(rng, n, shift=0.0):
    emb = rng.normal(size=(n, 8)) + shift
    return BatchStats(rng.dirichlet(np.ones(5), n), rng.random(n), rng.random(n), emb / np.linalg.norm(emb, axis=1, keepdims=True))


def test_compare_on_synthetic_statistics():
    rng = np.random.default_rng(0)
    ref = _stats(rng, 200)
    assert compare(ref, _stats(rng, 80), n_resamples=300)["verdict"] == "stable"
    moved = _stats(rng, 80, shift=0.8)
    moved.scores = moved.scores + 0.3
    report = compare(ref, moved, n_resamples=300)
    assert report["verdict"] == "drift" and set(report["fired"]) == {"embeddings", "scores"}
    assert any("re-calibrate" in a for a in report["actions"])


@pytest.fixture(scope="module")
def line(tmp_path_factory):
    root = tmp_path_factory.mktemp("line")
    write_world(root / "ref", 60, seed=21, defect_rate=0.5, progress=False)
    write_world(root / "same", 40, seed=22, defect_rate=0.5, progress=False)
    write_world(root / "dark", 40, seed=22, defect_rate=0.5, shift="lighting", progress=False)
    return root


def test_monitor_says_stable_for_the_same_world_and_drift_for_a_darker_line(line, tmp_path, capsys):
    ref = tmp_path / "ref.json"
    assert main(["monitor", "--model", "tiny-student", "--reference", str(line / "ref"), "--save-reference", str(ref),
                 "--batch", str(line / "same"), "--json", str(tmp_path / "same.json"), "--history", str(tmp_path / "h"),
                 "--permutations", "300"]) == 0
    assert json.loads((tmp_path / "same.json").read_text())["verdict"] == "stable"
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
