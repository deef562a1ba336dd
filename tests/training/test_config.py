"""`densevlm train --config file.yaml`: flags override the file; bad settings are one-line errors."""

from __future__ import annotations

import argparse
import re
from dataclasses import fields
from pathlib import Path

import pytest

from densevlm.backbones.factory import BUILTIN_MODELS
from densevlm.cli import train as train_cli
from densevlm.errors import DenseVLMError
from densevlm.training.config import TrainConfig, load_config_file


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_flags_override_the_file_and_defaults_fill_the_rest(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("images: /data/photos\nsteps: 50\nlr: 0.0005\nmethod: nodecouple\nbetas: [0.9, 0.98]\n")
    cfg = train_cli.build_config(_parse("--config", str(config), "--steps", "70", "--out", "runs/x"))
    assert (cfg.images, cfg.steps, cfg.lr, cfg.method, cfg.out) == ("/data/photos", 70, 0.0005, "nodecouple", "runs/x")
    assert cfg.betas == (0.9, 0.98)
    assert cfg.batch_size == TrainConfig().batch_size  # untouched settings keep their defaults


def test_unknown_setting_in_file_suggests_the_name(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("learning_rate: 0.1\nbatch_sise: 4\n")
    with pytest.raises(DenseVLMError, match="unknown setting 'learning_rate'"):
        train_cli.build_config(_parse("--config", str(config)))
    config.write_text("batch_sise: 4\n")
    with pytest.raises(DenseVLMError, match="did you mean batch_size"):
        train_cli.build_config(_parse("--config", str(config)))


def test_tau_is_the_old_name_of_logit_scale_in_files_and_flags(tmp_path):
    config = tmp_path / "old.yaml"
    config.write_text("images: x\ntau: 50\n")  # a config.yaml saved before the rename
    assert train_cli.build_config(_parse("--config", str(config))).logit_scale == 50
    assert train_cli.build_config(_parse("--config", str(config), "--tau", "20")).logit_scale == 20
    assert train_cli.build_config(_parse("--logit-scale", "30")).logit_scale == 30
    config.write_text("tau: 50\nlogit_scale: 40\n")
    with pytest.raises(DenseVLMError, match="'logit_scale' repeats a setting"):
        load_config_file(config)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"method": "densevml"}, "did you mean densevlm"),
        ({"regions": "boxes"}, "--regions boxes: choose grid, segments, mixed"),
        ({"lr": 2.0}, "--lr 2.0 is outside"),
        ({"alpha": 1.5}, "--alpha 1.5 is outside"),
        ({"logit_scale": 0.0}, "--logit-scale 0.0 must be positive"),
        ({"thing_mass_weight": -1.0}, "--thing-mass-weight must be >= 0"),
        ({"thing_tokens": -1}, "--thing-tokens -1 must be >= 0"),
        ({"images": ""}, "--images is required"),
    ],
)
def test_range_checks(changes, message):
    cfg = TrainConfig(images="x", out="y", **{k: v for k, v in changes.items() if k != "images"})
    if "images" in changes:
        cfg.images = ""
    with pytest.raises(DenseVLMError, match=message):
        cfg.check()


def test_the_shipped_recipe_file_is_a_valid_config():
    recipe = Path(__file__).resolve().parents[2] / "configs" / "embedded-parts-teacher.yaml"
    cfg = TrainConfig(**{**load_config_file(recipe), "images": "x", "out": "y"})
    cfg.check()
    assert cfg.teacher in BUILTIN_MODELS and cfg.teacher_parts > 0 and cfg.thing_mass_weight > 0


def test_the_defaults_are_the_recipe_file_and_paper_settings_undo_exactly_the_extensions():
    """configs/embedded.yaml holds train's defaults; PAPER_SETTINGS turns off the three extensions and
    restores the paper's schedule, and nothing else."""
    from densevlm.training.config import PAPER_SETTINGS

    recipe = load_config_file(Path(__file__).resolve().parents[2] / "configs" / "embedded.yaml")
    default = TrainConfig()
    assert all(getattr(default, k) == v for k, v in recipe.items()), recipe
    paper = TrainConfig(**PAPER_SETTINGS)
    changed = {f.name for f in fields(TrainConfig) if getattr(paper, f.name) != getattr(default, f.name)}
    assert changed == set(PAPER_SETTINGS) == {"teacher_parts", "thing_tokens", "thing_mass_weight", "steps", "alpha"}
    assert paper.teacher_parts == 0 and paper.thing_tokens == 0 and paper.thing_mass_weight == 0 and paper.alpha < 1


def test_train_retrieve_and_demo_default_to_one_shipped_teacher_that_outranks_the_student():
    """The default teacher is a built-in, the same for every command that uses one, and (as the
    paper's P-VLM) has a larger image tower than the default student."""
    import densevlm
    from densevlm.cli import demo as demo_cli
    from densevlm.cli import retrieve as retrieve_cli

    defaults = {TrainConfig().teacher}
    for module, argv in ((retrieve_cli, ["--images", "x", "--out", "y"]), (demo_cli, [])):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        defaults.add(parser.parse_args(argv).teacher)
    assert len(defaults) == 1 and defaults <= set(BUILTIN_MODELS)

    def image_params(name: str) -> int:
        return sum(p.numel() for p in densevlm.load_model(name).backbone.clip.visual.parameters())

    assert image_params(defaults.pop()) > 2 * image_params(TrainConfig().student)


@pytest.mark.parametrize("text, message", [
    ("thing_tokens: 2.5", "'thing_tokens' must be an int, got 2.5"),
    ("steps: '10'", "'steps' must be an int, got '10'"),
    ("teacher_parts: true", "'teacher_parts' must be an int, got True"),
    ("cache_teacher: 1", "'cache_teacher' must be a bool, got 1"),
    ("lr: fast", "'lr' must be a float, got 'fast'"),
])
def test_a_setting_of_the_wrong_kind_in_a_config_file_is_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    with pytest.raises(DenseVLMError, match=re.escape(f"{path}: {message}")):
        load_config_file(path)


def test_a_float_in_exponent_notation_is_read_as_a_float(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nlogit_scale: null\nmax_boxes: null\nthreshold: 0\n")
    assert load_config_file(path) == {"lr": 0.001, "logit_scale": None, "max_boxes": None, "threshold": 0}


def test_run_paths_are_recorded_absolute_and_names_are_kept(tmp_path, monkeypatch):
    from densevlm.training.config import absolute_paths

    (tmp_path / "photos").mkdir()
    monkeypatch.chdir(tmp_path)
    values = absolute_paths({"images": "photos", "student": "tiny-student", "vocab": None, "out": "runs/a",
                             "teacher": "missing.pt"})
    assert values == {"images": str(tmp_path / "photos"), "student": "tiny-student", "vocab": None, "out": "runs/a",
                      "teacher": "missing.pt"}
