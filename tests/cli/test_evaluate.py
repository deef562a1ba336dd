"""``densevlm eval``: the input size it uses when --size is not given."""

from __future__ import annotations

import json

import pytest

from densevlm.cli.main import main
from densevlm.model import DenseModel
from tests.evaluation.stubs import write_panoptic

CATS = [("bolt", True), ("floor", False)]


@pytest.mark.parametrize("size_args, expected", [([], 48), (["--size", "32"], 32)])
def test_default_size_is_the_models_default_size(tmp_path, monkeypatch, size_args, expected):
    # the model's default_size is the one source of truth (open_clip models: 448), not a CLI constant
    monkeypatch.setattr(DenseModel, "default_size", property(lambda self: 48))
    root = write_panoptic(tmp_path / "world", [[(1, 0, (4, 4, 20, 20))]], CATS, background=1)
    out = tmp_path / "metrics.json"
    argv = ["eval", "--data", str(root), "--model", "tiny-student", "--no-crops", "--no-seg", "--device", "cpu",
            "--json", str(out), *size_args]
    assert main(argv) == 0
    written = json.loads(out.read_text())
    assert written["size"] == expected
    data = str(root / "panoptic.json")
    assert (written["data"], written["vocabulary"], written["vocabulary_adapted"]) == (data, data, False)


@pytest.mark.parametrize("extra, expected", [
    ([], ("window", 32, 64)),
    (["--size", "96"], ("window", 32, 96)),
    (["--score-method", "pixel", "--min-area", "4"], ("pixel", 4, 64)),
])
def test_inspection_metrics_use_the_input_size_and_score_asked_for(tmp_path, monkeypatch, extra, expected):
    # eval --inspection --size N once scored inspection at the model's native size while the JSON said N
    import densevlm.inspection.evaluate as inspection
    from densevlm.data.synth import write_world

    world = tmp_path / "line"
    write_world(world, 4, seed=3, defect_rate=0.5, progress=False)
    seen = []
    real = inspection.analyse_images

    def recording(model, images, vocab, cfg, *args, **kwargs):
        seen.append((cfg.method, cfg.min_area, cfg.size))
        return real(model, images, vocab, cfg, *args, **kwargs)

    monkeypatch.setattr(inspection, "analyse_images", recording)
    out = tmp_path / "metrics.json"
    argv = ["eval", "--data", str(world), "--model", "tiny-student", "--no-crops", "--no-seg", "--device", "cpu",
            "--inspection", "--json", str(out), "-q", *extra]
    assert main(argv) == 0
    assert seen == [expected] and json.loads(out.read_text())["size"] == expected[2]


def test_score_settings_without_inspection_are_refused(tmp_path, capsys):
    assert main(["eval", "--data", str(tmp_path), "--score-method", "pixel"]) == 2
    assert "add --inspection" in capsys.readouterr().err


def test_inspection_with_a_vocabulary_without_defects_is_refused_before_any_work(tmp_path, capsys):
    from densevlm.data.synth import write_world

    world = tmp_path / "line"
    write_world(world, 2, seed=3, defect_rate=0.5, progress=False)
    vocab = tmp_path / "plain.txt"
    vocab.write_text((world / "vocab.txt").read_text().split("[defects]")[0])
    assert main(["eval", "--data", str(world), "--model", "tiny-student", "--vocab", str(vocab), "--inspection"]) == 2
    err = capsys.readouterr().err
    assert f"{vocab} has none" in err and err.count("\n") == 1 and "eval" not in capsys.readouterr().out
