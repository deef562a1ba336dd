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


@pytest.mark.parametrize("size_args, expected", [([], 64), (["--size", "96"], 96)])
def test_inspection_metrics_use_the_same_input_size(tmp_path, monkeypatch, size_args, expected):
    # eval --inspection --size N once scored inspection at the model's native size while the JSON said N
    import densevlm.inspection.evaluate as inspection
    from densevlm.data.synth import write_world

    world = tmp_path / "line"
    write_world(world, 4, seed=3, defect_rate=0.5, progress=False)
    seen = []
    real = inspection.analyse_images

    def recording(model, images, vocab, cfg, *args, **kwargs):
        seen.append(cfg.size)
        return real(model, images, vocab, cfg, *args, **kwargs)

    monkeypatch.setattr(inspection, "analyse_images", recording)
    out = tmp_path / "metrics.json"
    argv = ["eval", "--data", str(world), "--model", "tiny-student", "--no-crops", "--no-seg", "--device", "cpu",
            "--inspection", "--json", str(out), "-q", *size_args]
    assert main(argv) == 0
    assert seen == [expected] and json.loads(out.read_text())["size"] == expected
