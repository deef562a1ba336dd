"""Kinds: a damaged resumable state or weights file, and weights that turned non-finite.

A ``state.pt`` with a broken zip header (RuntimeError) or a pickle payload (UnpicklingError) used
to end in a traceback; one whose tensor bytes were damaged was resumed from, trained on and
saved as NaN weights with exit 0. Each is now one line naming the file; nothing is written.
"""

from __future__ import annotations

import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from densevlm.data.synth import write_world
from densevlm.errors import DenseVLMError
from densevlm.model import load_model
from densevlm.training.config import TrainConfig
from densevlm.training.trainer import Trainer
from tests.robustness.inprocess import run_main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished two-step run (``state.pt``, ``last.pt``) and its inputs."""
    root = tmp_path_factory.mktemp("state")
    write_world(root / "images", 8, seed=5, progress=False)
    student, teacher = load_model("tiny-vit"), load_model("tiny-vit")
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    args = ["train", "--student", str(student.save(root / "student.pt")), "--teacher", str(teacher.save(root / "teacher.pt")),
            "--images", str(root / "images"), "--logit-scale", "100", "--max-boxes", "2", "--batch-size", "2", "-q"]
    assert run_main([*args, "--out", str(root / "run"), "--steps", "2"]) == 0
    return root, args


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(capsys, path: Path, fragment: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert str(path) in err and fragment in err, err
    return err


def _damage_tensor_bytes(path: Path) -> None:
    """Overwrite the first bytes of the largest tensor in a torch zip file with NaNs (0xFF),
    leaving the archive itself readable."""
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    raw[start:start + 64] = b"\xff" * 64
    path.write_bytes(bytes(raw))


UNREADABLE = {
    "broken zip header": lambda p: p.write_bytes(b"PK\x03\x04" + p.read_bytes()[4:40]),
    "pickle payload": lambda p: p.write_bytes(pickle.dumps({"step": 3, "model": "not tensors"})),
}


@pytest.mark.parametrize("damage", list(UNREADABLE))
def test_train_resume_from_an_unreadable_state_is_one_line(run, tmp_path, capsys, damage):
    root, args = run
    out = tmp_path / "run"
    shutil.copytree(root / "run", out)
    UNREADABLE[damage](out / "state.pt")
    before = _files(out)
    capsys.readouterr()
    assert run_main([*args, "--out", str(out), "--steps", "4", "--resume"]) == 2
    err = _one_line(capsys, out / "state.pt", "not a readable training state")
    assert "without --resume" in err  # what to do
    assert _files(out) == before


def test_train_resume_from_damaged_tensor_bytes_is_refused(run, tmp_path, capsys):
    root, args = run
    out = tmp_path / "run"
    shutil.copytree(root / "run", out)
    _damage_tensor_bytes(out / "state.pt")
    before = _files(out)
    capsys.readouterr()
    assert run_main([*args, "--out", str(out), "--steps", "4", "--resume"]) == 2
    _one_line(capsys, out / "state.pt", "not match the checksum")
    assert _files(out) == before


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_model_file_with_damaged_tensor_bytes_is_refused(run, tmp_path, suffix):
    from densevlm.training.pretrain import save_model

    path = save_model(load_model(str(run[0] / "run" / "last.pt")), tmp_path / f"model{suffix}", {})
    assert load_model(str(path)).spec.arch == "tiny-vit"  # intact: loads
    if suffix == ".pt":
        _damage_tensor_bytes(path)
    else:  # tensor data follows the JSON header; the last bytes belong to a tensor
        raw = bytearray(path.read_bytes())
        raw[-64:] = b"\xff" * 64
        path.write_bytes(bytes(raw))
    before = path.read_bytes()
    with pytest.raises(DenseVLMError) as info:
        load_model(str(path))
    message = str(info.value)
    assert message.startswith(str(path)) and "not match the checksum" in message and "\n" not in message
    assert path.read_bytes() == before


def test_non_finite_weights_are_never_saved(run, tmp_path):
    root, _ = run
    out = tmp_path / "run"
    shutil.copytree(root / "run", out)
    cfg = TrainConfig(student=str(root / "student.pt"), teacher=str(root / "teacher.pt"), images=str(root / "images"),
                      out=str(out), steps=4, batch_size=2, logit_scale=100.0, max_boxes=2)
    trainer = Trainer(cfg, resume=True, progress=False)
    before = _files(out)
    with torch.no_grad():
        trainer.student.backbone.clip.visual.proj.fill_(float("nan"))
    with pytest.raises(DenseVLMError) as info:
        trainer.save()
    message = str(info.value)
    assert message.startswith(str(out)) and "training diverged by step 2" in message and "\n" not in message
    assert _files(out) == before
    with pytest.raises(DenseVLMError, match="hold NaN or infinity"):
        trainer.student.save(tmp_path / "nan.pt")
    assert not (tmp_path / "nan.pt").exists()


@pytest.mark.parametrize("damage", [*UNREADABLE, "tensor bytes"])
def test_pretrain_resume_from_a_damaged_state_is_one_line(tmp_path, capsys, damage):
    world = write_world(tmp_path / "world", 8, seed=3, progress=False)
    out = tmp_path / "m.pt"
    args = ["pretrain", "--data", str(world), "--out", str(out), "--steps", "4", "--batch-size", "4", "--save-every", "2"]
    assert run_main(args) == 0
    state = tmp_path / "m.pt.resume.pt"
    (UNREADABLE.get(damage) or _damage_tensor_bytes)(state)
    before = _files(tmp_path)
    capsys.readouterr()
    assert run_main([*args, "--steps", "6", "--resume"]) == 2
    _one_line(capsys, state, "not a readable training state" if damage in UNREADABLE else "not match the checksum")
    assert _files(tmp_path) == before


def test_a_run_whose_loss_turns_non_finite_stops_before_logging_it(run, tmp_path):
    root, _ = run
    out = tmp_path / "run"
    cfg = TrainConfig(student=str(root / "student.pt"), teacher=str(root / "teacher.pt"), images=str(root / "images"),
                      out=str(out), steps=2, batch_size=2, logit_scale=100.0, max_boxes=2, log_every=1)
    trainer = Trainer(cfg, progress=False)
    with torch.no_grad():
        trainer.student.backbone.clip.visual.proj.fill_(float("inf"))
    with pytest.raises(DenseVLMError) as info:
        trainer.run()
    message = str(info.value)
    assert message.startswith(str(out)) and "training diverged at step 1" in message and "\n" not in message
    assert not (out / "state.pt").exists() and not (out / "last.pt").exists()
    assert not (out / "metrics.jsonl").exists() or "NaN" not in (out / "metrics.jsonl").read_text()


def test_resume_keeps_the_runs_settings_and_refuses_others(run, tmp_path, capsys):
    import yaml

    root, _ = run
    out = tmp_path / "copied"
    shutil.copytree(root / "run", out)
    before = _files(out)
    capsys.readouterr()
    assert run_main(["train", "--out", str(out), "--resume", "--lr", "0.5", "-q"]) == 2
    err = _one_line(capsys, out / "config.yaml", "--resume: lr 0.5 differs from the run's 0.001")
    assert "start a new --out" in err
    assert run_main(["train", "--out", str(out), "--resume", "--steps", "1", "-q"]) == 2
    _one_line(capsys, out, "--steps 1 is below step 2")
    assert _files(out) == before
    # flags left out are the run's (batch 2, 2 boxes, logit scale 100, its models and images), not the defaults
    assert run_main(["train", "--out", str(out), "--resume", "--steps", "3", "--max-boxes", "2", "-q"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["batch_size"], saved["max_boxes"], saved["logit_scale"], saved["steps"]) == (2, 2, 100.0, 3)
    assert saved["student"] == str(root / "student.pt") and saved["out"] == str(out)
