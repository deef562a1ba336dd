"""`densevlm distill` on the command line: a run that prints its checkpoint, and one-line errors."""

from __future__ import annotations

import pytest

from densevlm.cli.main import main
from densevlm.data.synth import write_world
from densevlm.model import load_model


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-distill")
    write_world(root / "world", 4, seed=43, progress=False)
    return str(root / "world")


def test_distill_prints_a_loadable_checkpoint(images, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["distill", "--images", images, "--out", str(out), "--steps", "1", "--batch-size", "2", "-q"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == str(out / "last.pt") and "label agreement" in printed[0]
    assert load_model(printed[-1]).spec.arch == "tiny-vit-s"


@pytest.mark.parametrize("extra, words", [
    (["--arch", "tiny-vit-q"], "--arch tiny-vit-q"),
    (["--kl-weight", "0", "--cosine-weight", "0"], "not both 0"),
    (["--teacher", "no/such/teacher.pt"], "no/such/teacher.pt"),
])
def test_bad_input_is_one_line_exit_2(images, tmp_path, capsys, extra, words):
    status = main(["distill", "--images", images, "--out", str(tmp_path / "o"), "--steps", "1", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("densevlm distill: error:") and words in err[0], err


def test_resume_keeps_the_runs_settings_and_refuses_others(images, tmp_path, capsys, monkeypatch):
    import yaml

    out = tmp_path / "run"
    assert main(["distill", "--images", images, "--out", str(out), "--steps", "1", "--batch-size", "2",
                 "--lr", "5e-4", "-q"]) == 0
    capsys.readouterr()
    assert main(["distill", "--images", images, "--out", str(out), "--resume", "--lr", "1e-3", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--resume: lr 0.001 differs from the run's 0.0005" in err and str(out / "config.yaml") in err
    assert "\n" not in err
    # left out: the run's images, batch size and learning rate, not the defaults (32, 1e-3); from another folder
    monkeypatch.chdir(tmp_path / "run")
    assert main(["distill", "--out", ".", "--resume", "--steps", "2", "-q"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["batch_size"], saved["lr"], saved["steps"], saved["images"]) == (2, 5e-4, 2, images)
