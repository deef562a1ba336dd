"""The trainer: checkpoints, loss terms, DDP equivalence, kill-and-resume, bad images."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densevlm.data.synth import write_world
from densevlm.model import load_model
from densevlm.training.config import TrainConfig
from densevlm.training.trainer import KILL_AT_STEP, train

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    write_world(root / "images", 24, seed=31, progress=False)
    student = load_model("tiny-vit")
    teacher = load_model("tiny-vit")
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return {
        "images": str(root / "images"),
        "student": str(student.save(root / "student.pt")),
        "teacher": str(teacher.save(root / "teacher.pt")),
    }


def _args(world, out, *extra) -> list[str]:
    return ["train", "--student", world["student"], "--teacher", world["teacher"], "--images", world["images"],
            "--out", str(out), "--tau", "100", "--max-boxes", "4", "--log-every", "1", "--amp", "off", "-q", *extra]


def _state(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "state.pt", map_location="cpu", weights_only=True)["model"]


def test_train_writes_a_loadable_ensembled_checkpoint(world, tmp_path):
    cfg = TrainConfig(student=world["student"], teacher=world["teacher"], images=world["images"], out=str(tmp_path / "run"),
                      steps=3, batch_size=4, logit_scale=100.0, max_boxes=4, alpha=0.5, log_every=1)
    result = train(cfg, progress=False)
    assert result.steps == 3 and np.isfinite(result.final_loss)
    tuned = _state(tmp_path / "run")
    original = load_model(world["student"]).backbone.clip.state_dict()
    saved = load_model(str(tmp_path / "run" / "last.pt")).backbone.clip.state_dict()
    key = "visual.transformer.resblocks.0.mlp.c_fc.weight"
    assert not torch.equal(tuned[key], original[key])  # training moved it
    assert torch.allclose(saved[key], 0.5 * tuned[key] + 0.5 * original[key], atol=1e-6)
    assert torch.equal(saved["token_embedding.weight"], original["token_embedding.weight"])  # text frozen
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and (tmp_path / "run" / "retrieval.json").is_file()


def test_thing_mass_term_enters_the_loss_scaled_by_its_weight(world, tmp_path):
    first = {}
    for weight in (0.0, 1.0, 2.0):
        cfg = TrainConfig(student=world["student"], teacher=world["teacher"], images=world["images"],
                          out=str(tmp_path / f"w{weight}"), steps=1, batch_size=4, logit_scale=100.0, max_boxes=4,
                          thing_mass_weight=weight, log_every=1, val_before=False, amp="off")
        result = train(cfg, progress=False)
        assert result.retrieval["thing_frac"] > 0  # the random teacher calls some regions things
        first[weight] = result.final_loss  # the loss of step 1, before any update
    term = first[1.0] - first[0.0]
    assert term > 0
    assert first[2.0] - first[0.0] == pytest.approx(2 * term, rel=1e-4)


def test_teacher_parts_add_kept_thing_regions(world, tmp_path):
    counts = {}
    for parts in (0, 3):
        cfg = TrainConfig(student=world["student"], teacher=world["teacher"], images=world["images"],
                          out=str(tmp_path / f"p{parts}"), steps=2, batch_size=6, logit_scale=100.0, max_boxes=4,
                          teacher_parts=parts, log_every=1, val_before=False)
        summary = train(cfg, progress=False).retrieval
        kept = round(summary["kept_frac"] * summary["regions"])
        counts[parts] = (summary["regions"], kept, round(summary["thing_frac"] * kept))
    added = counts[3][0] - counts[0][0]
    assert 0 < added <= 3 * 12  # at most 3 blobs for each of the 12 images seen
    assert counts[3][1] - counts[0][1] == added  # every blob region is kept ...
    assert counts[3][2] - counts[0][2] == added  # ... and taught as a thing


def test_thing_tokens_add_only_the_token_cells_the_teacher_calls_things(world, tmp_path):
    counts = {}
    for tokens in (0, 10):
        cfg = TrainConfig(student=world["student"], teacher=world["teacher"], images=world["images"],
                          out=str(tmp_path / f"t{tokens}"), steps=2, batch_size=6, logit_scale=100.0, max_boxes=4,
                          teacher_parts=0, thing_tokens=tokens, log_every=1, val_before=False)
        summary = train(cfg, progress=False).retrieval
        kept = round(summary["kept_frac"] * summary["regions"])
        counts[tokens] = (summary["regions"], kept, round(summary["thing_frac"] * kept))
    added = counts[10][0] - counts[0][0]
    assert 0 < added < 10 * 12  # of 10 token cells for each of the 12 images, the ones the teacher calls things
    kept_added = counts[10][1] - counts[0][1]
    assert 0 < kept_added <= added  # of those, the ones above the threshold are kept
    assert counts[10][2] - counts[0][2] == kept_added  # every kept token cell is a thing
    losses = []
    for tokens in (0, 10):  # CLIPSelf has no teacher to name token cells: they change nothing
        cfg = TrainConfig(student=world["student"], images=world["images"], out=str(tmp_path / f"cs{tokens}"),
                          method="clipself", steps=1, batch_size=4, max_boxes=4, thing_tokens=tokens, log_every=1,
                          val_before=False, amp="off")
        losses.append(train(cfg, progress=False).final_loss)
    assert losses[0] == losses[1]


def test_two_processes_equal_one_process_with_double_batch(world, tmp_path):
    one = subprocess.run([sys.executable, "-m", "densevlm", *_args(world, tmp_path / "one", "--steps", "3", "--batch-size", "8")],
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([TORCHRUN, "--nproc_per_node", "2", "--master_port", "29531", "-m", "densevlm",
                          *_args(world, tmp_path / "two", "--steps", "3", "--batch-size", "4")], capture_output=True, text=True)
    assert two.returncode == 0, two.stderr
    a, b = _state(tmp_path / "one"), _state(tmp_path / "two")
    start = load_model(world["student"]).backbone.clip.state_dict()
    key = "visual.transformer.resblocks.3.mlp.c_proj.weight"
    assert (a[key] - start[key]).abs().max() > 1e-4  # the weights did move
    for k in a:
        x, y = a[k], b[k]
        if k.endswith("attn.in_proj_bias"):
            # The key bias cannot change a softmax, so its true gradient is zero; AdamW turns the
            # float noise left in its place into steps of +-lr that differ between the two runs.
            third = x.numel() // 3
            x, y = torch.cat([x[:third], x[2 * third:]]), torch.cat([y[:third], y[2 * third:]])
        assert torch.allclose(x, y, atol=1e-5), k


RESUME_RUN = ["--steps", "14", "--batch-size", "4", "--save-every", "2"]  # 24 images: an epoch is 6 steps


def _cli(world, out, *extra, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "densevlm", *_args(world, out, *RESUME_RUN, *extra)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})})


def _rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "regions_per_s"} for r in rows]  # all but the timing


@pytest.fixture(scope="module")
def straight(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    done = _cli(world, out)
    assert done.returncode == 0, done.stderr
    return out


# killed right after the first checkpoint; mid-epoch, one step past a checkpoint (its logged row
# must be dropped); at the end of the second epoch (the teacher cache then covers every image)
@pytest.mark.parametrize("kill_at, saved_at", [(2, 2), (9, 8), (12, 12)])
def test_kill_and_resume_matches_an_uninterrupted_run(world, straight, tmp_path, kill_at, saved_at):
    out = tmp_path / "killed"
    killed = _cli(world, out, env={KILL_AT_STEP: str(kill_at)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert torch.load(out / "state.pt", map_location="cpu", weights_only=True)["step"] == saved_at
    assert not (out / "retrieval.json").exists()
    resumed = _cli(world, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = _state(straight), _state(out)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _rows(out) == _rows(straight)
    assert (out / "retrieval.json").read_text() == (straight / "retrieval.json").read_text()


def test_bad_images_are_skipped_and_counted(world, tmp_path):
    folder = tmp_path / "messy"
    (folder / "sub").mkdir(parents=True)
    good = sorted(Path(world["images"], "images").glob("*.png"))[:6]
    for i, p in enumerate(good):
        Image.open(p).save(folder / f"good{i}.jpg")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    Image.new("CMYK", (80, 50), (0, 120, 200, 10)).save(folder / "sub" / "cmyk.jpg")
    Image.fromarray((np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)).save(folder / "sixteen.png")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "dot.png")
    cfg = TrainConfig(student=world["student"], teacher=world["teacher"], images=str(folder), out=str(tmp_path / "run"),
                      steps=4, batch_size=5, logit_scale=100.0, max_boxes=4)
    result = train(cfg, progress=False)
    assert result.steps == 4
    assert result.skipped_images >= 1  # the corrupt file, every time it is drawn
    assert np.isfinite(result.final_loss)
