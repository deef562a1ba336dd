"""Kind: a ``--device`` this machine lacks is one line naming the devices there are.

The machine is made GPU-less by patching torch.cuda, so the test means the same on a GPU host.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from densevlm import devices
from densevlm.cli.main import main
from densevlm.devices import available_devices, check_device
from densevlm.errors import DenseVLMError


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(devices, "cuda_count", lambda: 0)
    monkeypatch.setattr(devices, "mps_available", lambda: False)


@pytest.mark.parametrize("name", ["cuda", "cuda:1", "mps"])
def test_a_missing_accelerator_is_named_with_the_devices_there_are(no_gpu, name):
    with pytest.raises(DenseVLMError) as info:
        check_device(name)
    message = str(info.value)
    assert message.startswith(f"--device {name}:") and "devices here: cpu" in message and "\n" not in message


def test_an_index_past_the_last_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(devices, "cuda_count", lambda: 2)
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    assert available_devices()[:3] == ["cpu", "cuda:0", "cuda:1"]
    assert check_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(DenseVLMError, match=r"--device cuda:2: this machine has 2 CUDA GPU\(s\); devices here: cpu, cuda:0, cuda:1"):
        check_device("cuda:2")


def test_a_device_name_that_is_not_one_is_refused(no_gpu):
    with pytest.raises(DenseVLMError, match="is not a device name; use cpu, cuda, cuda:N or mps"):
        check_device("gpu0")
    assert check_device("cpu") == torch.device("cpu")


def test_load_model_checks_before_building(no_gpu):
    from densevlm.model import load_model

    with pytest.raises(DenseVLMError, match="there is no GPU"):
        load_model("tiny-student", device="cuda")


@pytest.mark.parametrize("command", [
    ["segment", "{images}", "--out", "{out}", "--device", "cuda"],
    ["eval", "--data", "{images}", "--device", "cuda:0"],
    ["retrieve", "--images", "{images}", "--out", "{out}/c.jsonl", "--device", "cuda"],
    ["train", "--images", "{images}", "--out", "{out}", "--device", "cuda", "--steps", "1"],
])
def test_every_command_says_there_is_no_gpu_in_one_line(no_gpu, tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)  # segment without --model looks for a demo's model in the working directory
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 24), (90, 120, 150)).save(images / "a.png")
    out = tmp_path / "out"
    argv = [a.format(images=images, out=out) for a in command]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "there is no GPU on this machine" in lines[0] and "devices here: cpu" in lines[0]
    assert not out.exists()


def test_train_help_has_no_suppress_marker(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--student" in text and "SUPPRESS" not in text
