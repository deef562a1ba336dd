"""Contrastive pretraining: the loss goes down, runs are reproducible and resumable."""

from __future__ import annotations

import json

import pytest
import torch

from densevlm.data.synth import write_world
from densevlm.errors import DenseVLMError
from densevlm.model import load_model
from densevlm.training.pretrain import PretrainConfig, contrastive_loss, pretrain


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("pre") / "world", 48, seed=21, progress=False)


def test_a_few_steps_lower_the_loss(world, tmp_path):
    cfg = PretrainConfig(data=str(world), out=str(tmp_path / "m.pt"), steps=40, batch_size=16, lr=2e-3, warmup=0.1,
                         crop_prob=0.5, p_stuff=0.5)
    summary = pretrain(cfg, progress=False)
    losses = [h["loss"] for h in summary["history"]]
    assert losses[-1] < losses[0] - 0.3
    model = load_model(str(tmp_path / "m.pt"))  # the result is a normal densevlm checkpoint
    assert model.spec.arch == "tiny-vit"
    sidecar = json.loads((tmp_path / "m.pt.json").read_text())
    assert sidecar["config"]["crop_prob"] == 0.5


def test_resume_continues_exactly(world, tmp_path):
    straight = PretrainConfig(data=str(world), out=str(tmp_path / "straight.pt"), steps=6, batch_size=8, save_every=100)
    pretrain(straight, progress=False)
    cut = PretrainConfig(data=str(world), out=str(tmp_path / "cut.pt"), steps=6, batch_size=8, save_every=100)
    stopped = pretrain(cut, progress=False, stop_after=3)
    assert stopped["stopped"] and not (tmp_path / "cut.pt").exists()
    pretrain(cut, resume=True, progress=False)
    a = load_model(str(tmp_path / "straight.pt")).backbone.clip.state_dict()
    b = load_model(str(tmp_path / "cut.pt")).backbone.clip.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_duplicate_captions_share_targets():
    image = torch.nn.functional.normalize(torch.eye(3), dim=-1)
    text = image.clone()
    separate = contrastive_loss(image, text, torch.tensor(10.0), ["a", "b", "c"])
    shared = contrastive_loss(image, text, torch.tensor(10.0), ["a", "a", "c"])
    assert float(shared) > float(separate)  # rows 0 and 1 now each want both columns


def test_bad_settings(world, tmp_path):
    with pytest.raises(DenseVLMError, match="--steps must be > 0"):
        pretrain(PretrainConfig(data=str(world), out=str(tmp_path / "x.pt"), steps=0), progress=False)
    with pytest.raises(DenseVLMError, match="captions file not found"):
        pretrain(PretrainConfig(data=str(tmp_path), out=str(tmp_path / "x.pt"), steps=2), progress=False)
